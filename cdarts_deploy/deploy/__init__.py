"""The deployment library: build a network from a genotype, export it to ONNX, check it against
PyTorch under one tolerance rule, convert precisions, build TensorRT engines, time runtimes and
write reports.  Commands (``cdarts_deploy.commands``) only parse options and print."""
