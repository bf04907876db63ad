# Mask R-CNN, COCO 2017, 1x (12 epochs) with EfficientViT-M4 (ImageNet-1k pretrained).
# Recipe: official EfficientViT / SHViT detection configs.
# Reported: Official EfficientViT repo (mmdet 2.x): 31.0 mask AP on COCO val2017.
_base_ = './_base_/mask_rcnn_evit_fpn.py'

model = dict(
    backbone=dict(
        type='evit_mm.EfficientViT',
        arch='m4',
        init_cfg=dict(type='Pretrained', checkpoint='efficientvit_m4')),
    neck=dict(in_channels=[128, 256, 384]))
