# RetinaNet + FPN on a CDARTS backbone, COCO 1x, with the paper's detection schedule (paper Section 4.6.3).
# Everything not stated here comes from mmdet's own RetinaNet config.  The backbone settings are those of
# the chain networks CDARTS-a/b; each network's config adds its genotype and ImageNet weights (and the
# DARTS-cell network its own levels and neck widths).  Needs only mmdet, not mmsegmentation.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_cdarts_det_imports.py']

model = dict(
    backbone=dict(
        _delete_=True,  # replace mmdet's ResNet settings rather than merging into them
        type='CDARTSBackbone',
        out_indices=(1, 2, 3, 4),  # strides 4, 8, 16, 32
        frozen_stages=1,  # stem and the stride-4 stage, as mmdet's ResNet recipe
        norm_eval=True),
    neck=dict(in_channels=[24, 40, 96, 960]))

# Paper schedule: batch 16 (8 GPUs x 2), SGD lr 0.02, momentum 0.9, wd 1e-4,
# 12 epochs with lr x0.1 at epochs 8 and 11 (the 1x schedule of the base).
# Gradients are clipped at norm 35 as in mmdet's RetinaNet recipes: at lr 0.02 the first iterations of a
# focal-loss head can otherwise blow up.  On another total batch size, `tools/train.py --auto-scale-lr`
# scales lr linearly from base_batch_size (as mmdet's own train.py does).
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
