# FasterSeg-style real-time segmentation network on CDARTS-b (paper Section 4.6.4).
# The dataset configs set width_factor (F) and num_classes.
#
# Follows FasterSeg: the decoder wiring (downstream/fasterseg_head.py), the auxiliary heads on the
# stride-16 and stride-32 features with loss weight 0.2, and OHEM with threshold 0.7.
# Does not follow FasterSeg: the optimiser and schedule are mmseg's generic ones from the dataset
# configs' bases (schedule_160k: SGD lr 0.01, momentum 0.9, wd 5e-4, poly decay (power 0.9) over 160k iterations),
# and so are the training crops and augmentations of mmseg's dataset configs.
# Every norm layer is synchronized across GPUs: the heads use SyncBN and the backbone converts its
# fused BatchNorm+activation layers with timm's converter (sync_bn=True), which keeps the activation.
norm_cfg = dict(type='SyncBN', requires_grad=True)
ohem = dict(type='OHEMPixelSampler', thresh=0.7, min_kept=100000)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='CDARTSBackbone',
        genotype='cdarts_b',
        out_indices=(1, 2, 3, 4),  # strides 4, 8, 16, 32
        last_stage_channels=320,  # segmentation variant: last stage is a 1x1 conv to 320
        norm_eval=False,
        sync_bn=True,
        # ImageNet weights of the timm model `cdarts_b`; the 960-channel last conv is skipped.
        # Set model.backbone.init_cfg=None to train from scratch.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cdarts_b_imagenet.pth')),
    decode_head=dict(
        type='FasterSegHead',
        in_channels=[24, 40, 96, 320],
        in_index=[0, 1, 2, 3],
        width_factor=6,
        low_level_channels=48,
        channels=48,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=norm_cfg,
        align_corners=False,
        sampler=ohem,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=[
        dict(  # stride 16
            type='FCNHead', in_channels=96, in_index=2, channels=64, num_convs=1, concat_input=False,
            dropout_ratio=0.1, num_classes=19, norm_cfg=norm_cfg, align_corners=False, sampler=ohem,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.2)),
        dict(  # stride 32
            type='FCNHead', in_channels=320, in_index=3, channels=64, num_convs=1, concat_input=False,
            dropout_ratio=0.1, num_classes=19, norm_cfg=norm_cfg, align_corners=False, sampler=ohem,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.2)),
    ],
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
