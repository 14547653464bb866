# Registers this project's segmentation parts with mmseg: the CDARTSBackbone, the FasterSeg-style
# decode head and the hook that writes checkpoints torch.load(weights_only=True) accepts.
custom_imports = dict(
    imports=['downstream.mm_backbone', 'downstream.fasterseg_head', 'downstream.checkpoints'],
    allow_failed_imports=False)
custom_hooks = [dict(type='PlainCheckpointHook')]
