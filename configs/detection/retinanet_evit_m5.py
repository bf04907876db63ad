# RetinaNet, COCO 2017, 1x (12 epochs) with EfficientViT-M5 (ImageNet-1k pretrained).
# Recipe: official EfficientViT / SHViT detection configs.
# Reported: No official result for this combination.
_base_ = './_base_/retinanet_evit_fpn.py'

model = dict(
    backbone=dict(
        type='evit_mm.EfficientViT',
        arch='m5',
        init_cfg=dict(type='Pretrained', checkpoint='efficientvit_m5')),
    neck=dict(in_channels=[192, 288, 384]))
