# RetinaNet, COCO 2017, 1x (12 epochs) with SHViT-S2 (ImageNet-1k pretrained).
# Recipe: official EfficientViT / SHViT detection configs.
# Reported: No official result for this combination.
_base_ = './_base_/retinanet_evit_fpn.py'

model = dict(
    backbone=dict(
        type='evit_mm.SHViT',
        arch='s2',
        init_cfg=dict(type='Pretrained', checkpoint='shvit_s2')),
    neck=dict(in_channels=[128, 308, 448]))
