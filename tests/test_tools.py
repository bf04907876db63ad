"""Converter, missing-dataset message, and plug-in use from a config outside this repo."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from evit_mm.checkpoint import CheckpointError
from evit_mm.cli import train_main
from evit_mm.config import build_model, load_config
from evit_mm.convert import convert_detector

REPO = Path(__file__).resolve().parents[1]
CONVERSIONS = [  # official file name, our config, backbone variant
    ('retinanet_efficientvit_m4_fpn_1x_coco.pth', 'retinanet_evit_m4', 'efficientvit_m4'),
    ('mask_rcnn_efficientvit_m4_fpn_1x_coco.pth', 'mask_rcnn_evit_m4', 'efficientvit_m4'),
    ('retinanet_shvit_s4_1x_coco.pth', 'retinanet_shvit_s4', 'shvit_s4'),
    ('maskrcnn_shvit_s4_1x_coco.pth', 'mask_rcnn_shvit_s4', 'shvit_s4'),
]


def _official_mmdet2_checkpoint(official_keys, seeded_state_dict, config, variant):
    """An mmdet 2.x-style detector checkpoint: official backbone keys (downstream 7x7 biases and
    index buffers), our neck and head keys (the official neck's keys are checked in test_neck),
    mmcv-1 meta and optimizer state; seeded values."""
    model = build_model(load_config(str(config), pretrained=False))
    window = {'attention_biases': lambda shape: [shape[0], 49],  # downstream: 7x7 everywhere
              'attention_bias_idxs': lambda shape: [49, 49]}
    backbone = [('backbone.' + key, window.get(key.rsplit('.', 1)[-1], list)(shape))
                for key, shape, _ in official_keys[variant] if not key.startswith('head.')]
    rest = [(key, value.shape) for key, value in model.state_dict().items()
            if not key.startswith('backbone.')]
    state = seeded_state_dict(backbone + rest, seed=11)
    meta = dict(mmdet_version='2.28.2', CLASSES=tuple(f'class{i}' for i in range(80)),
                config='# mmdet 2.x config text', epoch=12, iter=87960)
    return dict(meta=meta, state_dict=state,
                optimizer=dict(state={}, param_groups=[dict(lr=1e-6, params=[0, 1])])), model


@pytest.mark.parametrize('official,config,variant', CONVERSIONS, ids=[c[1] for c in CONVERSIONS])
def test_convert_official_detector(official_keys, seeded_state_dict, tmp_path, official, config,
                                   variant):
    config = REPO / 'configs' / 'detection' / f'{config}.py'
    checkpoint, model = _official_mmdet2_checkpoint(official_keys, seeded_state_dict, config,
                                                    variant)
    src, dst = tmp_path / official, tmp_path / 'converted.pth'
    torch.save(checkpoint, src)
    if official == CONVERSIONS[0][0]:  # the command line, once
        result = subprocess.run(
            [sys.executable, str(REPO / 'tools/model_converters/convert_official_detector.py'),
             str(src), str(config), str(dst)], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert 'every key of' in result.stdout
    else:  # what it runs, in this process
        state_dict, meta = convert_detector(str(src), str(config))
        torch.save(dict(state_dict=state_dict, meta=meta), dst)
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['dataset_meta']['classes'][3] == 'class3'
    from mmdet.apis import init_detector
    detector = init_detector(str(config), str(dst), device='cpu')
    loaded = detector.state_dict()
    assert loaded.keys() == model.state_dict().keys()
    for key, value in loaded.items():
        assert torch.equal(value, checkpoint['state_dict'][key]), key


def test_converter_rejects_mismatched_detector(official_keys, seeded_state_dict, tmp_path):
    config = REPO / 'configs' / 'detection' / 'retinanet_evit_m4.py'
    checkpoint, _ = _official_mmdet2_checkpoint(official_keys, seeded_state_dict, config,
                                                'efficientvit_m4')
    del checkpoint['state_dict']['bbox_head.retina_cls.weight']
    torch.save(checkpoint, tmp_path / 'broken.pth')
    other = REPO / 'configs' / 'detection' / 'retinanet_evit_m3.py'
    with pytest.raises(CheckpointError, match=r'missing .*bbox_head\.retina_cls\.weight'):
        convert_detector(str(tmp_path / 'broken.pth'), str(config))
    with pytest.raises(CheckpointError, match=r'(?s)retinanet_evit_m3.*shape mismatches'):
        convert_detector(str(tmp_path / 'broken.pth'), str(other))


@pytest.mark.parametrize('config,expected', [
    ('configs/detection/retinanet_evit_m4.py', 'data/coco/annotations/instances_train2017.json'),
    ('configs/segmentation/fpn_shvit_s1_ade20k.py', 'data/ade/ADEChallengeData2016/images/training'),
])
def test_missing_dataset_message(tmp_path, monkeypatch, config, expected):
    monkeypatch.chdir(tmp_path)  # the configs' relative data roots
    with pytest.raises(SystemExit) as stopped:  # tools/train.py's one line (in this process)
        train_main([str(REPO / config)])
    message = str(stopped.value.code)
    assert message.startswith('[evit_mm train] Dataset not found: ') and expected in message
    assert '--demo' in message and 'download' in message


EXTERNAL = {
    'mmdet': ("""
        _base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
        custom_imports = dict(imports=['evit_mm'], allow_failed_imports=False)
        model = dict(
            backbone=dict(_delete_=True, type='evit_mm.SHViT', arch='s1'),
            neck=dict(_delete_=True, type='evit_mm.EfficientViTFPN', in_channels=[128, 224, 320],
                      out_channels=256, num_outs=5, num_extra_trans_convs=1,
                      add_extra_convs='on_input'))
        """, """
        import numpy as np
        from mmdet.apis import inference_detector, init_detector
        model = init_detector('external.py', None, device='cpu')
        result = inference_detector(model, np.random.randint(0, 255, (120, 160, 3), np.uint8))
        print(type(model.backbone).__name__, tuple(result.pred_instances.bboxes.shape[1:]))
        """, 'SHViT (4,)'),
    'mmseg': ("""
        _base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'
        custom_imports = dict(imports=['evit_mm'], allow_failed_imports=False)
        model = dict(
            pretrained=None,
            backbone=dict(_delete_=True, type='evit_mm.EfficientViT', arch='m0'),
            neck=dict(_delete_=True, type='evit_mm.EfficientViTFPN', in_channels=[64, 128, 192],
                      out_channels=256, num_outs=5, num_extra_trans_convs=2))
        """, """
        import numpy as np
        from mmseg.apis import inference_model, init_model
        model = init_model('external.py', None, device='cpu')
        result = inference_model(model, np.random.randint(0, 255, (120, 160, 3), np.uint8))
        print(type(model.backbone).__name__, tuple(result.pred_sem_seg.data.shape))
        """, 'EfficientViT (1, 120, 160)'),
}


@pytest.mark.parametrize('framework', ['mmdet', 'mmseg'])
def test_config_outside_repo_with_custom_imports(tmp_path, framework):
    config, script, expected = EXTERNAL[framework]
    (tmp_path / 'external.py').write_text(textwrap.dedent(config))
    result = subprocess.run([sys.executable, '-c', textwrap.dedent(script)], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == expected


@pytest.mark.parametrize('config', ['configs/detection/retinanet_evit_m4.py',
                                    'configs/detection/mask_rcnn_shvit_s1.py',
                                    'configs/segmentation/fpn_evit_m0_ade20k.py'])
def test_demo_settings(tmp_path, config):
    from mmengine.config import Config
    from evit_mm.config import framework_of
    from evit_mm.runtime import apply_demo, iter_datasets
    cfg = Config.fromfile(str(REPO / config))
    framework = framework_of(cfg)
    notes = apply_demo(cfg, framework, root=str(tmp_path), num_images=4)
    assert any('DEMO MODE' in n and 'not on COCO / ADE20K' in n for n in notes)
    assert any('trained from scratch' in n for n in notes)
    assert cfg.model.backbone.init_cfg is None
    for _, dataset in iter_datasets(cfg):
        assert dataset.data_root.startswith(str(tmp_path))
    if framework == 'mmdet':
        assert cfg.train_dataloader.dataset.metainfo.classes == ('person', 'car', 'dog', 'bottle')
        assert Path(cfg.val_evaluator.ann_file).is_file()
        two_stage = 'mask_rcnn' in config
        assert cfg.train_cfg.max_epochs == (8 if two_stage else 16)
        if two_stage:
            assert cfg.model.roi_head.bbox_head.num_classes == 4
            assert cfg.model.roi_head.mask_head.num_classes == 4
            assert cfg.model.train_cfg.rcnn.sampler.num == 64
        else:
            assert cfg.model.bbox_head.num_classes == 4
    else:
        assert cfg.train_cfg.max_iters == 500 and cfg.model.data_preprocessor.size == (256, 256)
        assert cfg.val_evaluator.type == 'IoUMetric'
