# Mask R-CNN, COCO 2017, 1x (12 epochs) with SHViT-S1 (ImageNet-1k pretrained).
# Recipe: official EfficientViT / SHViT detection configs.
# Reported: No official result for this combination.
_base_ = './_base_/mask_rcnn_evit_fpn.py'

model = dict(
    backbone=dict(
        type='evit_mm.SHViT',
        arch='s1',
        init_cfg=dict(type='Pretrained', checkpoint='shvit_s1')),
    neck=dict(in_channels=[128, 224, 320]))
