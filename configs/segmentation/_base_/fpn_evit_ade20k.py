# Semantic FPN on ADE20K with an EfficientViT / SHViT backbone and the EfficientViTFPN neck (strides 4-32
# to the head). The recipe PVT / PoolFormer / EfficientFormer report with: 512x512 crops, 40k iterations,
# AdamW, poly schedule (schedules/adamw_poly_40k.py), 8 GPUs x 4 images.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', './schedules/adamw_poly_40k.py'
]
custom_imports = dict(imports=['evit_mm'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='evit_mm.EfficientViT',
        arch='m4',
        out_indices=(0, 1, 2),
        frozen_stages=-1,
        norm_eval=True,
        init_cfg=dict(type='Pretrained', checkpoint='efficientvit_m4')),
    neck=dict(
        _delete_=True,
        type='evit_mm.EfficientViTFPN',
        in_channels=[128, 256, 384],
        out_channels=256,
        start_level=0,
        num_outs=5,
        num_extra_trans_convs=2),
    decode_head=dict(
        in_channels=[256, 256, 256, 256],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        num_classes=150))

train_dataloader = dict(batch_size=4, num_workers=2)
