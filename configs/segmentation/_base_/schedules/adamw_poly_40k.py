# Optimizer and schedule of Semantic FPN as PVT / PoolFormer / EfficientFormer report it: AdamW
# lr 2e-4, weight decay 1e-4 (none on attention biases), poly decay over mmseg's 40k iterations,
# for 8 GPUs x 4 images.
_base_ = 'mmseg::_base_/schedules/schedule_40k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'attention_biases': dict(decay_mult=0.0)}))
param_scheduler = [
    dict(type='PolyLR', power=0.9, eta_min=0.0, begin=0, end=40000, by_epoch=False)
]
auto_scale_lr = dict(enable=False, base_batch_size=32)
