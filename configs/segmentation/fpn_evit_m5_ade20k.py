# Semantic FPN, ADE20K, 40k iterations, 512x512 with EfficientViT-M5 (ImageNet-1k pretrained).
# Recipe: Semantic FPN as reported by PVT / PoolFormer / EfficientFormer.
# Reported: No official result for this combination.
_base_ = './_base_/fpn_evit_ade20k.py'

model = dict(
    backbone=dict(
        type='evit_mm.EfficientViT',
        arch='m5',
        init_cfg=dict(type='Pretrained', checkpoint='efficientvit_m5')),
    neck=dict(in_channels=[192, 288, 384]))
