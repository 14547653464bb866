# CDARTS-b + FasterSeg-style decoder on Cityscapes (paper Section 4.6.4: 78.1 mIoU).
# Train on 1024x1024 crops, evaluate whole 1024x2048 images; F = 6.
_base_ = [
    './_fasterseg_cdarts-b.py',
    'mmseg::_base_/datasets/cityscapes_1024x1024.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    './_cdarts_seg_imports.py',
]
crop_size = (1024, 1024)
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(width_factor=6, channels=48, num_classes=19))
