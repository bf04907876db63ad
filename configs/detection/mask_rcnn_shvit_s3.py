# Mask R-CNN, COCO 2017, 1x (12 epochs) with SHViT-S3 (ImageNet-1k pretrained).
# Recipe: official EfficientViT / SHViT detection configs.
# Reported: No official result for this combination.
_base_ = './_base_/mask_rcnn_evit_fpn.py'

model = dict(
    backbone=dict(
        type='evit_mm.SHViT',
        arch='s3',
        init_cfg=dict(type='Pretrained', checkpoint='shvit_s3')),
    neck=dict(in_channels=[192, 352, 448]))
