# Mask R-CNN, COCO 2017, 1x (12 epochs) with SHViT-S4 (ImageNet-1k pretrained).
# Recipe: official EfficientViT / SHViT detection configs.
# Reported: Official SHViT repo (mmdet 2.x): 39.0 box AP / 35.9 mask AP on COCO val2017.
_base_ = './_base_/mask_rcnn_evit_fpn.py'

model = dict(
    backbone=dict(
        type='evit_mm.SHViT',
        arch='s4',
        init_cfg=dict(type='Pretrained', checkpoint='shvit_s4')),
    neck=dict(in_channels=[224, 336, 448]))
