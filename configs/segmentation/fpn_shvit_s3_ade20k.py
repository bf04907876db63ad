# Semantic FPN, ADE20K, 40k iterations, 512x512 with SHViT-S3 (ImageNet-1k pretrained).
# Recipe: Semantic FPN as reported by PVT / PoolFormer / EfficientFormer.
# Reported: No official result for this combination.
_base_ = './_base_/fpn_evit_ade20k.py'

model = dict(
    backbone=dict(
        type='evit_mm.SHViT',
        arch='s3',
        init_cfg=dict(type='Pretrained', checkpoint='shvit_s3')),
    neck=dict(in_channels=[192, 352, 448]))
