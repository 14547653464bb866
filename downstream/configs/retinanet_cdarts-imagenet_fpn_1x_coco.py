# RetinaNet + FPN on the DARTS-cell network searched by CDARTS on ImageNet (zoo `cdarts_imagenet`,
# ImageNet layout, C = 48, 14 cells), COCO 1x with the paper's detection schedule.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_cdarts_imports.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='CDARTSBackbone',
        genotype='cdarts_imagenet',
        model_kwargs=dict(layout='imagenet'),  # width/cells come from the genotype's hints
        out_indices=(0, 1, 2, 3),  # stem0 and the last cell of each stage: strides 4, 8, 16, 32
        frozen_stages=0,  # the stride-4 stem
        norm_eval=True,
        # ImageNet weights of the timm model `cdarts_imagenet`; None trains from scratch.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/cdarts_imagenet.pth')),
    neck=dict(in_channels=[48, 192, 384, 768]))

# Paper schedule: batch 16 (8 GPUs x 2), SGD lr 0.02, momentum 0.9, wd 1e-4, 12 epochs, steps at 8 and 11.
train_dataloader = dict(batch_size=2)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4))
auto_scale_lr = dict(enable=False, base_batch_size=16)
