# Mask R-CNN with an EfficientViT / SHViT backbone and the official EfficientViTFPN neck (strides 4-64).
# Recipe of the official EfficientViT / SHViT detection code (schedules/adamw_1x.py), 1333x800.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './schedules/adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['evit_mm'], allow_failed_imports=False)

model = dict(
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
        num_extra_trans_convs=2))

