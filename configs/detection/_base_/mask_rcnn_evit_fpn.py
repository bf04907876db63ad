# Mask R-CNN with an EfficientViT / SHViT backbone and the official EfficientViTFPN neck (strides 4-64).
# Recipe of the official EfficientViT / SHViT detection code: AdamW lr 1e-4, wd 0.05 (none on attention
# biases), 12 epochs with steps at 8 and 11, 500-iteration linear warm-up, 1333x800, 8 GPUs x 2 images.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
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

train_dataloader = dict(batch_size=2, num_workers=2)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]
train_cfg = dict(max_epochs=12)
auto_scale_lr = dict(enable=False, base_batch_size=16)
