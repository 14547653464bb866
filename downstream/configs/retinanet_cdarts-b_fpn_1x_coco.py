# RetinaNet + FPN on CDARTS-b, COCO 1x (paper Section 4.6.3: 36.2 AP).
_base_ = ['./_retinanet_cdarts_fpn_1x_coco.py']

# ImageNet weights of the timm model `cdarts_b` (no published file is bundled);
# set model.backbone.init_cfg=None to train from scratch.
model = dict(backbone=dict(
    genotype='cdarts_b', init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cdarts_b_imagenet.pth')))
