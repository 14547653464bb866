# CDARTS-b + FasterSeg-style decoder on ADE20K (paper Section 4.6.4: 40.4 mIoU).
# 640x640 crops; F = 16.
_base_ = [
    './_fasterseg_cdarts-b.py',
    'mmseg::_base_/datasets/ade20k_640x640.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    './_cdarts_seg_imports.py',
]
crop_size = (640, 640)
norm_cfg = dict(type='SyncBN', requires_grad=True)
ohem = dict(type='OHEMPixelSampler', thresh=0.7, min_kept=100000)
aux = dict(
    type='FCNHead', channels=64, num_convs=1, concat_input=False, dropout_ratio=0.1, num_classes=150,
    norm_cfg=norm_cfg, align_corners=False, sampler=ohem,
    loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.2))
model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(width_factor=16, channels=128, num_classes=150),
    # A list replaces the base's list, so both auxiliary heads are written out (strides 16, 32).
    auxiliary_head=[dict(aux, in_channels=96, in_index=2), dict(aux, in_channels=320, in_index=3)])
