# RetinaNet + FPN on the DARTS-cell network searched by CDARTS on ImageNet (zoo `cdarts_imagenet`,
# ImageNet layout, C = 48, 14 cells), COCO 1x with the paper's detection schedule.
_base_ = ['./_retinanet_cdarts_fpn_1x_coco.py']

model = dict(
    backbone=dict(
        genotype='cdarts_imagenet',
        model_kwargs=dict(layout='imagenet'),  # width/cells come from the genotype's hints
        out_indices=(0, 1, 2, 3),  # stem0 and the last cell of each stage: strides 4, 8, 16, 32
        frozen_stages=0,  # the stride-4 stem
        # ImageNet weights of the timm model `cdarts_imagenet`; None trains from scratch.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cdarts_imagenet.pth')),
    neck=dict(in_channels=[48, 192, 384, 768]))
