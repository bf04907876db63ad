"""Every config builds with the recipe's settings and gives its neck the backbone's features; one
config per method and backbone family also takes a training step and predicts on small images
(the heads and schedules are shared by the variants of a method)."""
from pathlib import Path

import pytest
import torch

from evit_mm.config import build_model, framework_of, load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py')  # templates: test_custom_data
                 if not {'_base_', 'custom', 'deploy'} & set(p.parts))  # deploy: test_deployment
# the smallest variant of each family runs the whole method
STEPPED = {f'{method}_{arch}{suffix}' for method, suffix in
           (('retinanet', ''), ('mask_rcnn', ''), ('fpn', '_ade20k'))
           for arch in ('evit_m0', 'shvit_s1')}
RECIPE = {'retinanet': (5, [8, 16, 32, 64, 128]), 'mask_rcnn': (5, [4, 8, 16, 32, 64]),
          'fpn': (5, [4, 8, 16, 32, 64])}


def test_all_thirty_configs_exist():
    names = {p.stem for p in CONFIGS}
    for arch in ['evit_m0', 'evit_m1', 'evit_m2', 'evit_m3', 'evit_m4', 'evit_m5',
                 'shvit_s1', 'shvit_s2', 'shvit_s3', 'shvit_s4']:
        assert {f'retinanet_{arch}', f'mask_rcnn_{arch}', f'fpn_{arch}_ade20k'} <= names
    assert len(CONFIGS) == 30


def _detection_batch(model, num_classes: int, with_mask: bool):
    from mmdet.testing import demo_mm_inputs
    packed = demo_mm_inputs(2, [[3, 128, 160], [3, 96, 128]], num_classes=num_classes,
                            with_mask=with_mask)
    return model.data_preprocessor(packed, True)


def _segmentation_batch(model):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples, inputs = [], []
    for h, w in [(128, 160), (96, 128)]:
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, h, w)))
        sample.set_metainfo(dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        samples.append(sample)
        inputs.append(torch.randint(0, 255, (3, h, w), dtype=torch.uint8))
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_config_builds_and_its_method_trains_and_predicts(path):
    assert 'custom_imports' not in path.read_text()  # inherited from the _base_ file
    cfg = load_config(path)
    assert cfg.custom_imports == dict(imports=['evit_mm'], allow_failed_imports=False)
    framework = framework_of(cfg)
    backbone = cfg.model.backbone
    short = f"{'efficientvit' if backbone.type.endswith('EfficientViT') else 'shvit'}_{backbone.arch}"
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=short)
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys['attention_biases'] == dict(decay_mult=0.0)
    backbone.init_cfg = None
    if framework == 'mmseg':
        assert cfg.model.data_preprocessor.size == (512, 512)
        cfg.model.data_preprocessor.size = None  # pad to the batch, not to 512x512 crops
        cfg.model.data_preprocessor.size_divisor = 32
    torch.manual_seed(0)
    model = build_model(cfg)
    assert cfg.model.neck.in_channels == model.backbone.out_channels
    method = path.stem.split('_evit')[0].split('_shvit')[0]
    num_outs, strides = RECIPE[method]
    assert cfg.model.neck.num_outs == num_outs
    if framework == 'mmdet':
        assert (optimizer.lr, optimizer.weight_decay, cfg.train_cfg.max_epochs) == (1e-4, 0.05, 12)
        assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
        with_mask = method == 'mask_rcnn'
        head = model.roi_head.bbox_head if with_mask else model.bbox_head
        data = _detection_batch(model, head.num_classes, with_mask)
    else:
        assert (optimizer.lr, optimizer.weight_decay, cfg.train_cfg.max_iters) == (2e-4, 1e-4, 40000)
        assert cfg.train_dataloader.batch_size == 4 and cfg.model.decode_head.num_classes == 150
        data = _segmentation_batch(model)
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])
    sizes = [f.shape[-1] for f in feats]
    assert sizes == [-(-160 // s) for s in strides][:len(sizes)]
    if path.stem not in STEPPED:
        return
    model.train()
    losses = model(**data, mode='loss')
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k
                for v in (v if isinstance(v, list) else [v]))
    assert torch.isfinite(total) and total.item() > 0
    total.backward()
    assert model.backbone.patch_embed[0].c.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(**data, mode='predict')
    assert len(preds) == 2
    if framework == 'mmdet':
        assert preds[0].pred_instances.bboxes.shape[-1] == 4
        if with_mask:
            assert preds[0].pred_instances.masks.shape[-2:] == (128, 160)
    else:
        assert preds[0].pred_sem_seg.data.shape == (1, 128, 160)
