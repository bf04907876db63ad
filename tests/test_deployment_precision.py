"""Deployment on real-shaped images and in reduced precision: border-correct boxes and masks,
a parity check that fails both ways, scoped rewrites, int8 and bf16 with their metric on a
dataset, and tools/deployment/test.py."""
import json
import re
import subprocess
import sys
from pathlib import Path

import mmcv
import pytest
import torch

from evit_mm.demo_data import make_ade20k_demo, make_coco_demo
from evit_mm.deployment import deploy as deploy_module
from evit_mm.deployment.deploy_config import read_deploy_config
from evit_mm.deployment.parity import Tolerances, compare_instances, compare_results
from evit_mm.deployment.quantize import BF16_FLAGS, precision_support
from evit_mm.errors import DeployError
from evit_mm.timing import cpu_flags

from test_deployment import (DEPLOY, FPN, MASK_RCNN, RETINANET, _checkpoint, _instances,  # noqa: F401
                             _small, images)

REPO = Path(__file__).resolve().parents[1]
ODD_SCALE = (330, 250)  # resized sides that are not multiples of 32: the input gets padded
BORDERS = {'left', 'top', 'right', 'bottom'}


def _odd_scale_config(tmp_path: Path, base: str, masks: bool = False) -> str:
    """The model config with a test resize whose results are not multiples of 32."""
    path = tmp_path / f'odd_{Path(base).name}'
    path.write_text(
        f"_base_ = '{base}'\n"
        "test_pipeline = [dict(type='LoadImageFromFile'),\n"
        f"    dict(type='Resize', scale={ODD_SCALE}, keep_ratio=True),\n"
        f"    dict(type='LoadAnnotations', with_bbox=True, with_mask={masks}),\n"
        "    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',\n"
        "                                          'img_shape', 'scale_factor'))]\n"
        "test_dataloader = dict(dataset=dict(pipeline=test_pipeline))\n")
    return str(path)


@pytest.fixture(scope='module')
def photos(images) -> dict:
    """A landscape and a portrait image."""
    return dict(landscape=images['wide'], portrait=images['tall'])


def _large_boxes(config: str, path: Path) -> str:
    """Seeded weights with confident detections whose boxes grow past the image (regression
    bias e^1 on width and height), so that many are clipped at its borders."""
    _checkpoint(config, path)
    checkpoint = torch.load(path)
    state = checkpoint['state_dict']
    key = ('roi_head.bbox_head.fc_reg.bias' if 'roi_head.bbox_head.fc_reg.bias' in state
           else 'bbox_head.retina_reg.bias')
    state[key].view(-1, 4)[:, 2:] = 1.0
    torch.save(checkpoint, path)
    return str(path)


@pytest.fixture(scope='module')
def weights(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('weights')
    return dict(retinanet=_large_boxes(RETINANET, root / 'retinanet.pth'),
                mask_rcnn=_large_boxes(MASK_RCNN, root / 'mask_rcnn.pth'),
                fpn=_checkpoint(FPN, root / 'fpn.pth'))


def _borders(instances, height: int, width: int) -> set:
    """The image borders that confident boxes touch."""
    boxes = instances.bboxes[instances.scores > 0.3]
    return {name for name, column, value in (('left', 0, 0), ('top', 1, 0), ('right', 2, width),
                                             ('bottom', 3, height))
            if len(boxes) and float((boxes[:, column] - value).abs().min()) < 1e-3}


def _check_borders(tmp_path, deploy_cfg, model_cfg, checkpoint, photos, min_compared):
    """Export, then on a landscape and a portrait photo: the input is padded, PyTorch's
    detections touch every border, and the backend agrees both ways."""
    pair = deploy_module.export_and_load(read_deploy_config(deploy_cfg), model_cfg, checkpoint,
                                         photos['landscape'], str(tmp_path / 'out'), 2)
    touched = set()
    for path in photos.values():
        data = pair.prepare(path)
        meta = data['data_samples'][0].metainfo
        assert tuple(meta['img_shape']) != tuple(data['inputs'].shape[2:])  # padded input
        reference = deploy_module.predict(pair.model, data)[0]
        report = compare_results(reference, deploy_module.predict(pair.backend_model, data)[0])
        assert report.ok and report.compared >= min_compared, (path, report.failures[:5])
        touched |= _borders(reference.pred_instances, *mmcv.imread(path).shape[:2])
    assert touched == BORDERS
    return pair


@pytest.mark.parametrize('deploy_cfg', ['detection_onnxruntime_dynamic.py',
                                        'detection_openvino_dynamic.py',
                                        'detection_onnxruntime_static-800x1344.py',
                                        'detection_openvino_static-800x1344.py'])
def test_boxes_are_clipped_to_each_image(tmp_path, photos, weights, deploy_cfg):
    config = _odd_scale_config(tmp_path, RETINANET)
    if 'static' in deploy_cfg:  # 330x250: mmdeploy's static resize, then padded to 352x256
        deploy_cfg = _small(tmp_path, deploy_cfg, *ODD_SCALE)
    else:
        deploy_cfg = str(DEPLOY / deploy_cfg)
    _check_borders(tmp_path, deploy_cfg, config, weights['retinanet'], photos, 20)


def test_mask_rcnn_boxes_and_masks_at_the_border(tmp_path, photos, weights):
    config = _odd_scale_config(tmp_path, MASK_RCNN, masks=True)
    deploy_cfg = _small(tmp_path, 'instance-seg_onnxruntime_static-800x1344.py', *ODD_SCALE)
    pair = _check_borders(tmp_path, deploy_cfg, config, weights['mask_rcnn'], photos, 20)
    data = pair.prepare(photos['portrait'])
    masks = deploy_module.predict(pair.backend_model, data)[0].pred_instances.masks
    assert tuple(masks.shape[1:]) == mmcv.imread(photos['portrait']).shape[:2]


# ---- a parity check that cannot pass by accident ---------------------------------------------------
def test_parity_fails_on_a_backend_only_box_a_missing_mask_and_nothing_compared():
    ref = _instances([[0, 0, 10, 10]], [0.9], [1])
    extra = _instances([[0, 0, 10, 10], [30, 30, 60, 60]], [0.9, 0.95], [1, 2])
    report = compare_instances(ref, extra)
    assert not report.ok and report.counts == [1, 2]
    assert any(f.startswith('backend detection 1 (label 2, score 0.9500') and
               'PyTorch has no detection of this label' in f for f in report.failures)
    assert 'PyTorch has 1 detections above 0.3, the backend 2' in report.failures
    ref.masks = torch.ones(1, 20, 20, dtype=torch.bool)
    report = compare_instances(ref, _instances([[0, 0, 10, 10]], [0.9], [1]))
    assert report.failures == ['PyTorch returns masks, the backend none: the deploy config '
                               'exports boxes only (use an instance-seg config)']
    quiet = _instances([[0, 0, 10, 10]], [0.1], [1])
    report = compare_instances(quiet, quiet)
    assert report.failures[0].startswith('0 compared: neither PyTorch nor the backend has a '
                                         'detection above 0.3')
    assert compare_instances(quiet, quiet, Tolerances(allow_empty=True)).ok
    # PyTorch has nothing confident, the backend has: the reverse match and the count fail
    report = compare_instances(quiet, _instances([[0, 0, 10, 10]], [0.8], [1]))
    assert not report.ok and report.counts == [0, 1]
    # a detection on the threshold may fall either side of it
    near = _instances([[0, 0, 10, 10], [30, 30, 60, 60]], [0.9, 0.3002], [1, 2])
    near_backend = _instances([[0, 0, 10, 10], [30, 30, 60, 60]], [0.9, 0.2999], [1, 2])
    assert compare_instances(near, near_backend).ok


# ---- the dense-head rewrite stays inside our export ------------------------------------------------
FCOS_HEAD = """
_base_ = '{base}'
model = dict(bbox_head=dict(_delete_=True, type='FCOSHead', num_classes=80, in_channels=256,
                            stacked_convs=1, feat_channels=64, strides=[8, 16, 32, 64, 128],
                            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                                          alpha=0.25, loss_weight=1.0),
                            loss_bbox=dict(type='IoULoss', loss_weight=1.0),
                            loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True,
                                                 loss_weight=1.0)))
"""


def _rewrite_records():
    import mmdeploy.codebase.mmdet.models  # noqa: F401  (mmdeploy's own rewrites registered)
    from mmdeploy.core import FUNCTION_REWRITER

    from evit_mm.deployment.rewrites import FUNC, SINGLE_STAGE, TWO_STAGE
    records = FUNCTION_REWRITER._registry._rewrite_records
    return {name: list(records.get(name, [])) for name in (FUNC, SINGLE_STAGE, TWO_STAGE)}


def test_rewrite_registry_is_restored_and_other_heads_export(tmp_path, photos, weights,
                                                              monkeypatch):
    from evit_mm.deployment import backends, rewrites
    before = _rewrite_records()
    deploy_cfg = read_deploy_config(_small(tmp_path, 'detection_onnxruntime_static-800x1344.py',
                                           160, 128))
    pair = deploy_module.export_and_load(deploy_cfg, RETINANET, weights['retinanet'],
                                         photos['landscape'], str(tmp_path / 'retina'), 2)
    assert rewrites.serves(pair.model) and _rewrite_records() == before

    def failing_export(*args, **kwargs):
        during = _rewrite_records()  # ours, while exporting: forward and pre-NMS selection
        assert [len(during[name]) - len(before[name]) for name in during] == [1, 1, 0]
        raise RuntimeError('export failed')
    import mmdeploy.apis.onnx
    monkeypatch.setattr(mmdeploy.apis.onnx, 'export', failing_export)
    with pytest.raises(RuntimeError, match='export failed'):
        backends.export_end2end(pair.model, deploy_cfg, pair.prepare(photos['landscape']),
                                str(tmp_path / 'again'))
    assert _rewrite_records() == before
    monkeypatch.undo()
    # an FCOS head (score factors) is not ours to rewrite: mmdeploy's own rewrite exports it
    fcos = tmp_path / 'fcos.py'
    fcos.write_text(FCOS_HEAD.format(base=RETINANET))
    fcos_pair = deploy_module.export_and_load(deploy_cfg, str(fcos), None, photos['landscape'],
                                              str(tmp_path / 'fcos'), 2)
    assert not rewrites.serves(fcos_pair.model) and _rewrite_records() == before
    data = fcos_pair.prepare(photos['landscape'])
    report = compare_results(deploy_module.predict(fcos_pair.model, data)[0],
                             deploy_module.predict(fcos_pair.backend_model, data)[0],
                             Tolerances(allow_empty=True))
    assert report.ok, report.failures[:3]


# ---- reduced precision -----------------------------------------------------------------------------
def _demo_config(tmp_path: Path, base: str, data_root: Path, scale) -> Path:
    """A model config on a small generated dataset (as a --demo run's saved config is)."""
    path = tmp_path / f'demo_{Path(base).name}'
    if 'fpn' in base:
        text = (f"_base_ = '{base}'\n"
                f"data_root = '{data_root}'\n"
                "test_dataloader = dict(dataset=dict(data_root=data_root, pipeline=[\n"
                "    dict(type='LoadImageFromFile'),\n"
                f"    dict(type='Resize', scale={scale}, keep_ratio=True),\n"
                "    dict(type='LoadAnnotations', reduce_zero_label=True),\n"
                "    dict(type='PackSegInputs')]))\n"
                "val_dataloader = test_dataloader\n")
    else:
        text = (f"_base_ = '{base}'\n"
                f"data_root = '{data_root}/'\n"
                "test_pipeline = [dict(type='LoadImageFromFile'),\n"
                f"    dict(type='Resize', scale={scale}, keep_ratio=True),\n"
                "    dict(type='LoadAnnotations', with_bbox=True),\n"
                "    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',\n"
                "                                          'img_shape', 'scale_factor'))]\n"
                "test_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline,"
                " ann_file='annotations/instances_val2017.json'))\n"
                "val_dataloader = test_dataloader\n"
                "test_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')\n"
                "val_evaluator = test_evaluator\n")
    path.write_text(text)
    return path


def _quantized_layers(ir_xml: Path, name_part: str) -> int:
    """FakeQuantize layers of an OpenVINO IR whose names contain ``name_part``."""
    return len(re.findall(r'<layer id="\d+" name="[^"]*%s[^"]*" type="FakeQuantize"'
                          % re.escape(name_part), ir_xml.read_text()))


def test_int8_quantizes_with_calibration_images_and_checks_the_metric(tmp_path, weights,
                                                                      monkeypatch):
    cwd = tmp_path / 'cwd'  # nothing is written outside the work dirs
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    data = make_ade20k_demo(str(tmp_path / 'ade'), 4, 6)
    config = _demo_config(tmp_path, FPN, data, (256, 128))
    deploy_cfg = tmp_path / 'int8.py'
    deploy_cfg.write_text(f"_base_ = ['{DEPLOY / 'segmentation_openvino-int8_static-512x512.py'}']"
                          "\nonnx_config = dict(input_shape=[128, 128])\n"
                          "calib_config = dict(num_images=4)\n")
    image = str(next((data / 'images/validation').glob('*.jpg')))
    argv = [str(deploy_cfg), str(config), weights['fpn'], image, '--work-dir',
            str(tmp_path / 'out'), '--iters', '1', '--max-metric-drop', '100']
    record = deploy_module.main(argv)
    assert record['precision'] == 'int8' and len(record['calibration_images']) == 4
    assert all(Path(p).parent == data / 'images/validation' for p in record['calibration_images'])
    xml = Path(record['files']['openvino_xml'])
    assert xml.name == 'end2end_int8.xml' and 'FakeQuantize' in xml.read_text()
    check = record['metric_check']
    assert check['run'] and check['pytorch']['metric'] == 'mIoU'
    assert check['drop_points'] == pytest.approx(
        check['pytorch']['points'] - check['openvino']['points'])
    assert record['parity'][image]['checked'] is False  # per-image agreement is information
    assert set(record['drawn']) == {'pytorch', 'openvino'}
    assert {name: Path(path) for name, path in record['drawn'].items()} == {
        name: tmp_path / 'out' / f'output_{name}.jpg' for name in ('pytorch', 'openvino')}
    assert all(Path(path).is_file() for path in record['drawn'].values())
    assert _quantized_layers(xml, 'backbone') > 0 and record['calib_config']['num_images'] == 4
    # calib_config.ignored_scope keeps those layers in float; one that matches nothing: one line
    kept = tmp_path / 'int8_float_backbone.py'
    kept.write_text(deploy_cfg.read_text().replace(
        'num_images=4)', "num_images=4, ignored_scope=dict(patterns=['.*backbone.*']))"))
    partial = deploy_module.main([str(kept)] + argv[1:4] + ['--work-dir', str(tmp_path / 'kept'),
                                                            '--iters', '1', '--max-metric-drop',
                                                            '100'])
    quantized = Path(partial['files']['openvino_xml'])
    # left: only the backbone's outputs, quantized where the neck reads them
    assert _quantized_layers(quantized, 'backbone') <= 4 < _quantized_layers(xml, 'backbone')
    assert _quantized_layers(quantized, 'neck') > 0
    kept.write_text(deploy_cfg.read_text().replace(
        'num_images=4)', "num_images=4, ignored_scope=dict(patterns=['.*no_such_layer.*']))"))
    with pytest.raises(SystemExit) as exit_info:
        deploy_module.main([str(kept)] + argv[1:4] + ['--work-dir', str(tmp_path / 'typo')])
    message = str(exit_info.value.code)
    assert message.startswith("[evit_mm deploy] calib_config.ignored_scope={'patterns': "
                              "['.*no_such_layer.*']}: ") and '\n' not in message
    # a drop beyond the accepted one exits non-zero and keeps the record
    with pytest.raises(SystemExit) as exit_info:
        deploy_module.main(argv[:-1] + ['-1'])
    assert 'METRIC CHECK FAILED: openvino int8 loses' in str(exit_info.value.code)
    assert json.loads((tmp_path / 'out/deploy_record.json').read_text())['metric_check']['ok'] \
        is False
    # no calibration data: one line
    empty = tmp_path / 'empty'
    (empty / 'images/validation').mkdir(parents=True)
    (empty / 'annotations/validation').mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        deploy_module.main([str(deploy_cfg), str(_demo_config(tmp_path, FPN, empty, (256, 128))),
                            weights['fpn'], image, '--work-dir', str(tmp_path / 'none')])
    assert re.fullmatch(r"\[evit_mm deploy\] Calibration dataset under '.*empty' is empty; int8 "
                        r'needs images to calibrate on\.', str(exit_info.value.code))
    assert list(cwd.iterdir()) == []


def test_bf16_runs_only_where_the_cpu_has_bf16_units(tmp_path, photos, weights, capsys):
    flags = cpu_flags()
    argv = [str(DEPLOY / 'detection_openvino-bf16_dynamic.py'), RETINANET, weights['retinanet'],
            photos['landscape'], '--work-dir', str(tmp_path / 'out'), '--iters', '1']
    if not any(flag in flags for flag in BF16_FLAGS):
        with pytest.raises(SystemExit) as exit_info:
            deploy_module.main(argv)
        message = str(exit_info.value.code)
        assert message.startswith('[evit_mm deploy] bf16 needs a CPU with bf16 units '
                                  '(avx512_bf16 or amx_bf16); this CPU (')
        assert 'OpenVINO would only emulate bf16' in message
        with capsys.disabled():
            print(f'\n[bf16 not run: this CPU has {flags}, no bf16 units]')
        return
    record = deploy_module.main(argv + ['--allow-empty'])
    assert record['precision'] == 'bf16' and record['precision_support'] == 'native'
    assert record['metric_check']['run'] is False  # no dataset for this model config


def test_precision_support_names_the_cpu():
    assert precision_support('f32', []) == 'native'
    assert precision_support('int8', ['avx2', 'avx512_vnni']) == 'native'
    assert precision_support('int8', ['avx2']).startswith('int8 without VNNI units')
    with pytest.raises(DeployError, match=r'bf16 needs a CPU with bf16 units \(avx512_bf16 or '
                       r'amx_bf16\); this CPU \(.+\) has only avx2, avx512f, so OpenVINO would '
                       'only emulate bf16'):
        precision_support('bf16', ['avx2', 'avx512f'])
    assert precision_support('bf16', ['amx_bf16']) == 'native'


# ---- tools/deployment/test.py ----------------------------------------------------------------------
def test_deployment_test_tool_gives_metric_and_fps_for_both(tmp_path, weights):
    data = make_coco_demo(str(tmp_path / 'coco'), 4, 4)
    config = _demo_config(tmp_path, RETINANET, data, (160, 160))
    deploy_cfg = str(DEPLOY / 'detection_onnxruntime_dynamic.py')
    image = str(next((data / 'val2017').glob('*.jpg')))
    deploy_module.main([deploy_cfg, str(config), weights['retinanet'], image, '--work-dir',
                        str(tmp_path / 'out'), '--iters', '1', '--allow-empty'])
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/deployment/test.py'), deploy_cfg, str(config),
         '--model', str(tmp_path / 'out/end2end.onnx'), '--checkpoint', weights['retinanet'],
         '--work-dir', str(tmp_path / 'test')], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3, result.stdout  # quiet: the two result lines and the difference
    assert re.match(r'\[evit_mm test\] coco/bbox_mAP=\d\.\d{3} \| \d+\.\d\d FPS \(pytorch f32, '
                    r'cpu', lines[0]), lines[0]
    assert re.match(r'\[evit_mm test\] coco/bbox_mAP=\d\.\d{3} \| \d+\.\d\d FPS \(onnxruntime '
                    r'f32, cpu', lines[1]), lines[1]
    record = json.loads((tmp_path / 'test/test_metrics.json').read_text())
    assert abs(record['main_metric']['drop_points']) < 0.05  # float32: the same detections
    assert record['speed']['fps'] > 0 and record['pytorch']['speed']['fps'] > 0
    assert 'coco/bbox_mAP' in record['metrics'] and (tmp_path / 'test/test.log').is_file()
    # the wrong task: one line naming both configs and what fits
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/deployment/test.py'),
         str(DEPLOY / 'segmentation_onnxruntime_static-512x512.py'), str(config),
         '--model', str(tmp_path / 'out/end2end.onnx')], capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1:] == [
        f'[evit_mm test] segmentation_onnxruntime_static-512x512.py is a Segmentation deploy '
        f'config, but {config} is a ObjectDetection model. Use one of configs/deploy/'
        '{detection_onnxruntime_dynamic.py,detection_onnxruntime_static-800x1344.py,'
        'detection_openvino-bf16_dynamic.py,detection_openvino-bf16_static-800x1344.py,'
        'detection_openvino-int8_dynamic.py,detection_openvino-int8_static-800x1344.py,'
        'detection_openvino_dynamic.py,detection_openvino_static-800x1344.py}.']
