"""One-shot GPU acceptance run: every section passes, fails or is not applicable, and a skip is a failure.

    python -m tools.gpu_check --out gpu_check/            # full run, budget 420 s (target: under 8 minutes)
    python -m tools.gpu_check --quick --out gpu_check/    # budget 150 s (target: under 3 minutes)
    python -m tools.gpu_check --dry-run                   # what would run on the GPU image and here, and why
    python -m tools.gpu_check --device cpu --out /tmp/x   # the same sections on the CPU at toy sizes

Sections (``--dry-run`` lists them with their sizes):

* ``parity``: PyTorch on the device in FP32 (TF32 off), FP16 and BF16 autocast against the CPU FP32
  model, one cell network and one chain network with calibrated BatchNorm, judged by the project's
  rule (:mod:`cdarts_deploy.deploy.parity`).  Two negative controls must fail: a copy whose stem
  weights moved by 1% under the FP32 rule, and a copy with every weight moved by 25% under the
  loosest rule.  If a control passes, the rule proves nothing and the section fails.
* ``latency_eager``, ``latency_cuda_graph``, ``latency_compile``: the zoo networks (cell
  cdarts_cifar at 32 px, chain cdarts_b and cell cdarts_imagenet at 224 px) and timm peers at
  batch 1, 8 and 32; CUDA-graph replays and compiled runs must agree with eager.
* ``search_step``: seconds per CDARTS and DARTS search step at paper size and their ratio
  (``benchmarks/search_step.py``).
* ``train_throughput``: images/s of cdarts-train's loop against a bare loop at the paper's retraining
  size (``benchmarks/train_throughput.py``).
* ``gemm``: the GEMM ceiling (FP32 with TF32 off, FP16).
* ``tensorrt``, ``onnxruntime_cuda``: engines / the CUDA provider, checked and timed, where installed.

"Not applicable" is only for what the machine lacks (no CUDA device, TensorRT not installed, an
ONNX Runtime without its CUDA provider).  A section the machine can run that was not run (time
budget spent, an exception, a hardware present but unusable) fails, and so does the whole run:
exit status 1.  The JSON and Markdown reports are rewritten after every section, so a run killed
from outside still leaves what it measured.

Run from the root of a source checkout (``python -m`` puts it on the import path; nothing needs
installing) or from an installed environment, with torch, timm, onnx and onnxruntime only; TensorRT and the
OpenMMLab packages are imported only by the sections that need them.

Modules: :mod:`.capabilities` (what this machine has), :mod:`.settings` (sizes and budget), :mod:`.context`
(what sections share), :mod:`.verdicts` (running sections and judging them), one module per kind of section
(:mod:`.device_parity`, :mod:`.latency`, :mod:`.benchmark_sections`, :mod:`.gpu_runtimes`), :mod:`.plan` (the
sections in order and ``--dry-run``), :mod:`.report` (JSON and Markdown) and :mod:`.cli` (``main``).
"""
