# RetinaNet + FPN on CDARTS-a, COCO 1x (paper Section 4.6.3: 35.2 AP).
_base_ = ['./_retinanet_cdarts_fpn_1x_coco.py']

# ImageNet weights of the timm model `cdarts_a` (no published file is bundled);
# set model.backbone.init_cfg=None to train from scratch.
model = dict(backbone=dict(
    genotype='cdarts_a', init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cdarts_a_imagenet.pth')))
