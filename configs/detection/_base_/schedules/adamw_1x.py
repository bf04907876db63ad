# Optimizer and 1x schedule of the official EfficientViT / SHViT detectors: AdamW lr 1e-4, weight
# decay 0.05 (none on attention biases); mmdet's schedule_1x: 12 epochs, steps at 8 and 11,
# 500-iteration linear warm-up; for 8 GPUs x 2 images.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.0)}))
