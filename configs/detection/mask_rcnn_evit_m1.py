# Mask R-CNN, COCO 2017, 1x (12 epochs) with EfficientViT-M1 (ImageNet-1k pretrained).
# Recipe: official EfficientViT / SHViT detection configs.
# Reported: No official result for this combination.
_base_ = './_base_/mask_rcnn_evit_fpn.py'

model = dict(
    backbone=dict(
        type='evit_mm.EfficientViT',
        arch='m1',
        init_cfg=dict(type='Pretrained', checkpoint='efficientvit_m1')),
    neck=dict(in_channels=[128, 144, 192]))
