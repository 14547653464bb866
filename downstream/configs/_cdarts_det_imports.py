# Registers this project's detection parts with mmdet: the CDARTSBackbone and the hook that writes
# checkpoints torch.load(weights_only=True) accepts.  Needs only mmdet (not mmsegmentation).
custom_imports = dict(imports=['downstream.mm_backbone', 'downstream.checkpoints'], allow_failed_imports=False)
custom_hooks = [dict(type='PlainCheckpointHook')]
