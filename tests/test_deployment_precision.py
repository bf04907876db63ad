"""Deployment in reduced precision and its checks: a parity check that fails both ways, scoped
rewrites, int8 and bf16 with their metric on a dataset, and tools/deployment/test.py."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evit_mm.config import load_config
from evit_mm.demo_data import make_ade20k_demo
from evit_mm.deployment import deploy as deploy_module
from evit_mm.deployment.deploy_config import check_segmentation_output, read_deploy_config
from evit_mm.deployment.evaluate import (ImageEvaluator, main_metrics, reference_config,
                                         run_test, sample_test_images, with_nothing_detected)
from evit_mm.deployment.parity import Tolerances, compare_instances, compare_results
from evit_mm.deployment.quantize import (BF16_FLAGS, calibration_dataset_cfg, calibration_images,
                                         precision_support, quantize_int8)
from evit_mm.errors import DeployError
from evit_mm.timing import cpu_flags

from deploy_helpers import (DEPLOY, FPN, RETINANET, demo_config, instances, odd_scale_config,
                            rewrite_records, run_deploy, small_deploy_config)

REPO = Path(__file__).resolve().parents[1]


# ---- a parity check that cannot pass by accident ---------------------------------------------------
def test_parity_fails_on_a_backend_only_box_a_missing_mask_and_nothing_compared():
    ref = instances([[0, 0, 10, 10]], [0.9], [1])
    extra = instances([[0, 0, 10, 10], [30, 30, 60, 60]], [0.9, 0.95], [1, 2])
    report = compare_instances(ref, extra)
    assert not report.ok and report.counts == [1, 2]
    assert any(f.startswith('backend detection 1 (label 2, score 0.9500') and
               'PyTorch has no detection of this label' in f for f in report.failures)
    assert 'PyTorch has 1 detections above 0.3, the backend 2' in report.failures
    ref.masks = torch.ones(1, 20, 20, dtype=torch.bool)
    report = compare_instances(ref, instances([[0, 0, 10, 10]], [0.9], [1]))
    assert report.failures == ['PyTorch returns masks, the backend none: the deploy config '
                               'exports boxes only (use an instance-seg config)']
    quiet = instances([[0, 0, 10, 10]], [0.1], [1])
    report = compare_instances(quiet, quiet)
    assert report.failures[0].startswith('0 compared: neither PyTorch nor the backend has a '
                                         'detection above 0.3')
    assert compare_instances(quiet, quiet, Tolerances(allow_empty=True)).ok
    # PyTorch has nothing confident, the backend has: the reverse match and the count fail
    report = compare_instances(quiet, instances([[0, 0, 10, 10]], [0.8], [1]))
    assert not report.ok and report.counts == [0, 1]
    # a detection on the threshold may fall either side of it
    near = instances([[0, 0, 10, 10], [30, 30, 60, 60]], [0.9, 0.3002], [1, 2])
    near_backend = instances([[0, 0, 10, 10], [30, 30, 60, 60]], [0.9, 0.2999], [1, 2])
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


def test_rewrite_registry_is_restored_and_other_heads_export(tmp_path, deployed, images,
                                                              monkeypatch):
    from evit_mm.deployment import backends, rewrites
    retinanet = deployed('detection_onnxruntime_static-800x1344.py')
    before, pair = retinanet.rewrites_before, retinanet.pair
    assert rewrites.serves(pair.model) and rewrite_records() == before
    deploy_cfg = read_deploy_config(retinanet.deploy_cfg)

    def failing_export(*args, **kwargs):
        during = rewrite_records()  # ours, while exporting: forward and pre-NMS selection
        assert {name: len(during[name]) - len(before[name]) for name in during} == {
            rewrites.FUNC: 1, rewrites.RPN: 0, rewrites.ROI_BBOX: 0, rewrites.ROI_EXTRACTOR: 0,
            rewrites.SINGLE_STAGE: 1, rewrites.TWO_STAGE: 0, rewrites.SEG_UPSAMPLE: 0}
        raise RuntimeError('export failed')
    import mmdeploy.apis.onnx
    monkeypatch.setattr(mmdeploy.apis.onnx, 'export', failing_export)
    with pytest.raises(RuntimeError, match='export failed'):
        backends.export_end2end(pair.model, deploy_cfg, pair.prepare(images['wide']),
                                str(tmp_path / 'again'))
    assert rewrite_records() == before
    monkeypatch.undo()
    # an FCOS head (score factors) is not ours to rewrite: mmdeploy's own rewrite exports it
    fcos = tmp_path / 'fcos.py'
    fcos.write_text(FCOS_HEAD.format(base=RETINANET))
    small = small_deploy_config(tmp_path, 'detection_onnxruntime_static-800x1344.py', 160, 128)
    fcos_pair = deploy_module.export_and_load(read_deploy_config(small), str(fcos), None,
                                              images['wide'], str(tmp_path / 'fcos'), 2)
    assert not rewrites.serves(fcos_pair.model) and rewrite_records() == before
    data = fcos_pair.prepare(images['wide'])
    report = compare_results(deploy_module.predict(fcos_pair.model, data)[0],
                             deploy_module.predict(fcos_pair.backend_model, data)[0],
                             Tolerances(allow_empty=True))
    assert report.ok, report.failures[:3]


# ---- reduced precision -----------------------------------------------------------------------------
def test_static_evaluation_resizes_inside_wrapped_test_datasets(tmp_path):
    """The metric check of a static config feeds the backend its input size, also when the
    test set is wrapped (RepeatDataset & co)."""
    from evit_mm.deployment.evaluate import evaluation_config
    config = tmp_path / 'wrapped.py'
    config.write_text(f"_base_ = '{RETINANET}'\n"
                      "test_dataloader = dict(dataset=dict(_delete_=True, type='RepeatDataset', "
                      "times=2, dataset={{_base_.test_dataloader.dataset}}))\n")
    deploy_cfg = read_deploy_config(small_deploy_config(
        tmp_path, 'detection_onnxruntime_static-800x1344.py', 320, 256))
    cfg = evaluation_config(load_config(str(config), pretrained=False), deploy_cfg)
    inner = cfg.test_dataloader.dataset.dataset
    assert cfg.test_dataloader.dataset.type == 'RepeatDataset'
    resize = next(step for step in inner.pipeline if step['type'] == 'Resize')
    assert resize['scale'] == (320, 256) and resize['keep_ratio'] is False
    # ConcatDataset: every dataset in it
    config.write_text(f"_base_ = '{RETINANET}'\n"
                      "test_dataloader = dict(dataset=dict(_delete_=True, type='ConcatDataset', "
                      "datasets=[{{_base_.test_dataloader.dataset}}, dict(type='RepeatDataset', "
                      "times=2, dataset={{_base_.test_dataloader.dataset}})]))\n")
    cfg = evaluation_config(load_config(str(config), pretrained=False), deploy_cfg)
    first, repeated = cfg.test_dataloader.dataset.datasets
    for dataset in (first, repeated.dataset):
        resize = next(step for step in dataset.pipeline if step['type'] == 'Resize')
        assert resize['scale'] == (320, 256) and resize['keep_ratio'] is False


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
    config = demo_config(tmp_path, FPN, data, (256, 128))
    deploy_cfg = tmp_path / 'int8.py'
    deploy_cfg.write_text(f"_base_ = ['{DEPLOY / 'segmentation_openvino-int8_static-512x512.py'}']"
                          "\nonnx_config = dict(input_shape=[128, 128])\n"
                          "calib_config = dict(num_images=4, method='ptq')\n")
    image = str(next((data / 'images/validation').glob('*.jpg')))
    argv = [str(deploy_cfg), str(config), weights['fpn'], image, '--work-dir',
            str(tmp_path / 'out'), '--iters', '1', '--max-metric-drop']
    # a drop beyond the accepted one (-1: any result) exits non-zero and keeps the record
    with pytest.raises(SystemExit) as exit_info:
        deploy_module.main(argv + ['-1'])
    assert 'METRIC CHECK FAILED: openvino int8 loses' in str(exit_info.value.code)
    record = json.loads((tmp_path / 'out/deploy_record.json').read_text())
    assert record['metric_check']['ok'] is False
    assert record['precision'] == 'int8' and len(record['calibration_images']) == 4
    xml = Path(record['files']['openvino_xml'])
    assert record['quantization'] == dict(method='ptq',
                                          fake_quantize_ops=_quantized_layers(xml, ''))
    assert all(Path(p).parent == data / 'images/validation' for p in record['calibration_images'])
    xml = Path(record['files']['openvino_xml'])
    assert xml.name == 'end2end_int8.xml' and 'FakeQuantize' in xml.read_text()
    check = record['metric_check']
    assert check['run'] and set(check['pytorch']['metrics']) == {'mIoU'}
    assert check['drop_points'] == pytest.approx(
        check['pytorch']['metrics']['mIoU'] - check['openvino']['metrics']['mIoU'])
    # the IR says what it was checked at: a plain compile_model runs its float layers so
    import openvino as ov
    if any(flag in cpu_flags() for flag in BF16_FLAGS):  # f32 and bf16 measured, one kept
        assert 'float_layers_bf16' in check and check['float_layers'] in ('f32', 'bf16')
    else:
        assert check['float_layers'] == 'f32'
        assert check['float_layers_note'].startswith('bf16 not tried: bf16 needs a CPU')
    ir = ov.Core().read_model(str(xml))
    assert ir.outputs[0].get_element_type().is_integral()  # argmax_before_upsampling: labels
    assert ir.outputs[0].get_partial_shape().to_shape() == [1, 1, 32, 32]  # the head's, 1/4
    assert ir.get_rt_info(['runtime_options', 'INFERENCE_PRECISION_HINT']).astype(str) == \
        check['float_layers']
    compiled = ov.Core().compile_model(str(xml), 'CPU')
    assert str(compiled.get_property('INFERENCE_PRECISION_HINT')) in (
        "<Type: 'float32'>", "<Type: 'bfloat16'>")
    assert record['model_precision'] == 'int8'
    assert record['parity'][image]['checked'] is False  # per-image agreement is information
    assert set(record['drawn']) == {'pytorch', 'openvino'}
    assert {name: Path(path) for name, path in record['drawn'].items()} == {
        name: tmp_path / 'out' / f'output_{name}.jpg' for name in ('pytorch', 'openvino')}
    assert all(Path(path).is_file() for path in record['drawn'].values())
    assert _quantized_layers(xml, 'backbone') > 0 and record['calib_config']['num_images'] == 4
    # calib_config.ignored_scope keeps those layers in float; one that matches nothing: one line.
    # The default method, accuracy control, validates on the val split (here the 6 test images)
    kept = tmp_path / 'int8_float_backbone.py'
    kept.write_text(deploy_cfg.read_text().replace(
        "num_images=4, method='ptq')",
        "num_images=4, ignored_scope=dict(patterns=['.*backbone.*']))"))
    # within the accepted drop: the record comes back
    partial = run_deploy(tmp_path / 'kept', str(kept), *argv[1:4], '--max-metric-drop', '100')
    assert partial.record['metric_check']['ok'] is True
    control = partial.record['quantization']
    assert control['method'] == 'accuracy_control' and control['validation_images'] == 6
    # labels at the head's resolution: what they cost the float graph is left out of NNCF's
    assert control['float_graph_drop'] >= 0 and set(control['float_metrics']) == {'mIoU'}
    assert control['max_drop'] == pytest.approx(100 - control['float_graph_drop'])
    assert control['steps'] == [] and control['kept_in_float'] == []  # the drop held at once
    assert control['reached'] is True
    assert isinstance(control['quantized_drop'], float)
    assert partial.record['precision'] == 'int8'
    quantized = Path(partial.record['files']['openvino_xml'])
    # left: only the backbone's outputs, quantized where the neck reads them
    assert _quantized_layers(quantized, 'backbone') <= 4 < _quantized_layers(xml, 'backbone')
    assert _quantized_layers(quantized, 'neck') > 0
    # a float32 config refuses labels at the head's resolution (they move boundaries)
    f32 = read_deploy_config(str(DEPLOY / 'segmentation_openvino_static-512x512.py'))
    f32.codebase_config.argmax_before_upsampling = True
    with pytest.raises(DeployError, match=r'argmax_before_upsampling, which moves class '
                       r".*a float32 config must give PyTorch's labels"):
        check_segmentation_output(f32)
    # a pattern that matches no layer: one line (deploy.py prefixes it, as for every DeployError)
    with pytest.raises(DeployError) as error:
        quantize_int8(str(tmp_path / 'kept/end2end.xml'), partial.pair.calibration_images,
                      partial.pair.prepare, str(tmp_path / 'typo.xml'),
                      dict(patterns=['.*no_such_layer.*']))
    message = str(error.value)
    assert message.startswith("calib_config.ignored_scope={'patterns': ['.*no_such_layer.*']}: "
                              ) and '\n' not in message
    # no calibration data: one line
    empty = tmp_path / 'empty'
    (empty / 'images/validation').mkdir(parents=True)
    (empty / 'annotations/validation').mkdir(parents=True)
    empty_cfg = load_config(str(demo_config(tmp_path, FPN, empty, (256, 128))), pretrained=False)
    with pytest.raises(DeployError) as error:
        calibration_images(calibration_dataset_cfg(empty_cfg, None), 4)
    assert re.fullmatch(r"Calibration dataset under '.*empty' is empty; int8 needs images to "
                        r'calibrate on\.', str(error.value))
    assert list(cwd.iterdir()) == []


def test_bf16_runs_only_where_the_cpu_has_bf16_units(tmp_path, images, weights, capsys):
    flags = cpu_flags()
    config = odd_scale_config(tmp_path, RETINANET)  # small test scale, no dataset
    argv = [str(DEPLOY / 'detection_openvino-bf16_dynamic.py'), config, weights['retinanet'],
            images['wide'], '--work-dir', str(tmp_path / 'out'), '--iters', '1']
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
    record = deploy_module.main(argv + ['--allow-empty', '--accept-unchecked'])
    assert record['precision'] == 'bf16' and record['precision_support'] == 'native'
    assert record['metric_check']['run'] is False  # no dataset for this model config
    assert record['model_precision'] == 'bf16'
    assert any(line.startswith('  accuracy NOT checked (--accept-unchecked): Dataset not found')
               for line in deploy_module.summary_lines(record))


def test_precision_support_names_the_cpu():
    assert precision_support('f32', []) == 'native'
    assert precision_support('int8', ['avx2', 'avx512_vnni']) == 'native'
    assert precision_support('int8', ['avx2']).startswith('int8 without VNNI units')
    with pytest.raises(DeployError, match=r'bf16 needs a CPU with bf16 units \(avx512_bf16 or '
                       r'amx_bf16\); this CPU \(.+\) has only avx2, avx512f, so OpenVINO would '
                       'only emulate bf16'):
        precision_support('bf16', ['avx2', 'avx512f'])
    assert precision_support('bf16', ['amx_bf16']) == 'native'


def test_an_instruction_cap_is_a_cpu_without_those_units(monkeypatch):
    """ONEDNN_MAX_CPU_ISA (measuring an AVX2-only CPU on a newer one) keeps OpenVINO from the
    bf16 and VNNI units: bf16 is refused, int8 noted, and the speed record names the cap."""
    from evit_mm.deployment import quantize
    from evit_mm.timing import ISA_CAPS, environment
    for name in ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(quantize, 'cpu_flags', lambda: ['avx2', 'avx512f', 'avx512_vnni',
                                                        'avx512_bf16', 'amx_bf16', 'amx_int8'])
    assert precision_support('bf16') == 'native' == precision_support('int8')
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')
    with pytest.raises(DeployError, match=r"^bf16: ONEDNN_MAX_CPU_ISA=AVX2 lets OpenVINO use only "
                       r"avx2 of this CPU's units, so it would only emulate bf16"):
        precision_support('bf16')
    assert precision_support('int8').startswith('int8 without VNNI units')
    assert environment('cpu')['isa_caps'] == {'ONEDNN_MAX_CPU_ISA': 'AVX2'}
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX512_CORE_BF16')
    assert precision_support('bf16') == 'native' == precision_support('int8')


# ---- tools/deployment/test.py ----------------------------------------------------------------------
def test_deployment_test_tool_gives_metric_and_fps_for_both(tmp_path, deployed):
    exported = deployed('detection_onnxruntime_dynamic.py')  # on the generated COCO data
    deploy_cfg, config = exported.deploy_cfg, exported.model_cfg
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/deployment/test.py'), deploy_cfg, config,
         '--model', exported.record['files']['onnx'], '--checkpoint', exported.checkpoint,
         '--work-dir', str(tmp_path / 'test')], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3, result.stdout  # quiet: the two result lines and the difference
    assert re.match(r'\[evit_mm test\] coco/bbox_mAP=\d\.\d{3} \| \d+\.\d\d FPS \(pytorch f32, '
                    r"the model's own scale, cpu", lines[0]), lines[0]
    assert re.match(r'\[evit_mm test\] coco/bbox_mAP=\d\.\d{3} \| \d+\.\d\d FPS \(onnxruntime '
                    r'f32, cpu', lines[1]), lines[1]
    record = json.loads((tmp_path / 'test/test_metrics.json').read_text())
    assert abs(record['main_metrics']['coco/bbox_mAP']['drop_points']) < 0.05  # the same boxes
    assert record['speed']['fps'] > 0 and record['pytorch']['speed']['fps'] > 0
    assert 'coco/bbox_mAP' in record['metrics'] and (tmp_path / 'test/test.log').is_file()
    # the wrong task: one line naming both configs and what fits
    from evit_mm.deployment.evaluate import main as test_main
    with pytest.raises(SystemExit) as exit_info:
        test_main([str(DEPLOY / 'segmentation_onnxruntime_static-512x512.py'), config,
                   '--model', exported.record['files']['onnx']])
    assert str(exit_info.value.code) == (
        f'[evit_mm test] segmentation_onnxruntime_static-512x512.py is a Segmentation deploy '
        f'config, but {config} is a ObjectDetection model. Use one of configs/deploy/'
        '{detection_onnxruntime_dynamic.py,detection_onnxruntime_static-800x1344.py,'
        'detection_openvino-bf16_dynamic.py,detection_openvino-bf16_static-800x1344.py,'
        'detection_openvino-int8_dynamic.py,detection_openvino-int8_static-800x1344.py,'
        'detection_openvino_dynamic.py,detection_openvino_static-800x1344.py}.')


def test_reduced_precision_without_a_test_set_stops_before_the_export(tmp_path, images,
                                                                     weights):
    config = odd_scale_config(tmp_path, RETINANET)  # no dataset at its data root
    with pytest.raises(SystemExit) as exit_info:
        deploy_module.main([str(DEPLOY / 'detection_openvino-int8_dynamic.py'), config,
                            weights['retinanet'], images['wide'], '--work-dir',
                            str(tmp_path / 'out')])
    message = str(exit_info.value.code)
    assert message.startswith("[evit_mm deploy] int8 changes the model's results, which are "
                              "checked on the model config's test set, and it is missing: "
                              'Dataset not found: ')
    assert message.endswith('To deploy an unchecked model anyway, add --accept-unchecked.')
    assert '\n' not in message and not (tmp_path / 'out' / 'end2end.onnx').exists()


def test_the_precision_comes_from_the_model_file(tmp_path, deployed):
    """A float IR given with an int8 config stops in one line; the float IR names its
    precision, so that a plain compile_model runs it as checked."""
    import openvino as ov

    from evit_mm.deployment.backends import model_precision
    from evit_mm.deployment.evaluate import main as test_main
    exported = deployed('detection_openvino_dynamic.py')
    xml = exported.record['files']['openvino_xml']
    ir = ov.Core().read_model(xml)
    assert ir.get_rt_info(['runtime_options', 'INFERENCE_PRECISION_HINT']).astype(str) == 'f32'
    assert model_precision(xml) == 'f32' == exported.record['model_precision']
    with pytest.raises(SystemExit) as exit_info:
        test_main([str(DEPLOY / 'detection_openvino-int8_dynamic.py'), exported.model_cfg,
                   '--model', xml, '--work-dir', str(tmp_path / 'test')])
    assert str(exit_info.value.code) == (
        '[evit_mm test] end2end.xml is a f32 model, but the deploy config is for int8: give '
        'the quantized IR that deploy.py wrote with this config (end2end_int8.xml), or the '
        'deploy config it was exported with.')


def test_evaluation_stays_on_the_cpu_when_torch_sees_a_gpu(tmp_path, deployed, monkeypatch):
    """mmengine's Runner moves the model to the GPU whenever it sees one; ours does not."""
    import mmengine.runner.runner as mmengine_runner

    from evit_mm.deployment.evaluate import evaluation_config, run_test
    exported = deployed('detection_onnxruntime_dynamic.py')
    monkeypatch.setattr(mmengine_runner, 'get_device', lambda: 'cuda')
    deploy_cfg = read_deploy_config(exported.deploy_cfg)
    cfg = evaluation_config(load_config(exported.model_cfg, pretrained=False), deploy_cfg)
    metrics, speed = run_test(exported.pair.backend_model, cfg, str(tmp_path / 'test'))
    assert 'coco/bbox_mAP' in metrics and speed['fps'] > 0 and speed['device'] == 'cpu'


def _pseudo_labelled_config(tmp_path: Path, exported, scale) -> Path:
    """The demo model config at ``scale``, its test annotations replaced by what the PyTorch
    model detects there (score > 0.3): a metric that depends on the scale the model sees."""
    from mmdet.apis import inference_detector

    from evit_mm.inference import build_inference_model
    base = load_config(exported.model_cfg, pretrained=False)
    root = Path(base.test_dataloader.dataset.data_root)
    config = demo_config(tmp_path, exported.model_cfg, root, scale)
    coco = json.loads((root / 'annotations/instances_val2017.json').read_text())
    model, cfg, _ = build_inference_model(str(config), exported.checkpoint, fuse=True)
    model.cfg = cfg
    annotations = []
    for image in coco['images']:
        found = inference_detector(model, str(root / 'val2017' / image['file_name']))
        found = found.pred_instances[found.pred_instances.scores > 0.3]
        for box, label in zip(found.bboxes.tolist(), found.labels.tolist()):
            annotations.append(dict(id=len(annotations) + 1, image_id=image['id'], iscrowd=0,
                                    category_id=coco['categories'][label]['id'],
                                    bbox=[box[0], box[1], box[2] - box[0], box[3] - box[1]],
                                    area=(box[2] - box[0]) * (box[3] - box[1])))
    assert len(annotations) >= 8
    (tmp_path / 'pseudo.json').write_text(json.dumps(dict(coco, annotations=annotations)))
    resize = f"dict(type='Resize', scale={tuple(scale)}, keep_ratio=True)"
    # the pipeline list itself (the base's is replaced) and the pseudo labels, in the one
    # test_dataloader of the file (a second assignment would replace the first)
    config.write_text(config.read_text().replace(
        'pipeline=test_pipeline', f"pipeline=[dict(type='LoadImageFromFile'), {resize}, "
        "dict(type='LoadAnnotations', with_bbox=True), dict(type='PackDetInputs')]").replace(
        "ann_file='annotations/instances_val2017.json'))", f"ann_file='{tmp_path}/pseudo.json'))")
        + f"test_evaluator = dict(ann_file='{tmp_path}/pseudo.json')\n")
    return config


def test_a_static_config_at_another_scale_is_measured_against_the_model_as_trained(
        tmp_path, deployed):
    """A model tested at 160x120 deployed with a static 330x250 config: PyTorch is evaluated at
    its own scale and the drop is the real one (not 0: both sides squashed)."""
    from evit_mm.deployment.evaluate import main as test_main
    exported = deployed('detection_onnxruntime_static-800x1344.py')  # static 330x250
    config = _pseudo_labelled_config(tmp_path, exported, (160, 120))
    record = test_main([exported.deploy_cfg, str(config), '--model',
                        exported.record['files']['onnx'], '--checkpoint', exported.checkpoint,
                        '--work-dir', str(tmp_path / 'test')])
    main = record['main_metrics']['coco/bbox_mAP']
    assert main['pytorch_points'] > 1  # its own detections as the ground truth
    assert main['drop_points'] == pytest.approx(main['pytorch_points'] - main['points'])
    assert abs(main['drop_points']) > 1  # what squashing to 330x250 changes


def test_a_static_config_at_another_scale_gets_a_note_naming_both_scales(tmp_path):
    from evit_mm.deployment.evaluate import static_scale_note
    model_cfg = load_config(str(demo_config(tmp_path, RETINANET, tmp_path, (160, 120))),
                            pretrained=False)
    other = read_deploy_config(small_deploy_config(
        tmp_path, 'detection_onnxruntime_static-800x1344.py', 330, 250))
    note = static_scale_note(model_cfg, other)
    assert note.startswith('the static deploy config resizes every image to 330x250 (WxH), '
                           'but the model is tested at 160x120 (Resize, keep_ratio=True)')
    assert 'configs/deploy/*_dynamic.py' in note
    same = read_deploy_config(small_deploy_config(
        tmp_path, 'detection_onnxruntime_static-800x1344.py', 160, 128))  # padded to 32
    assert static_scale_note(model_cfg, same) is None
    assert static_scale_note(model_cfg, read_deploy_config(
        str(DEPLOY / 'detection_onnxruntime_dynamic.py'))) is None


def test_deployment_test_tool_takes_batches(tmp_path, deployed):
    """--batch-size 2 on a dynamic Mask R-CNN config: bbox and segm mAP, as at batch 1 within
    what batching changes in PyTorch too; a static config refuses it in one line."""
    from evit_mm.deployment.evaluate import main as test_main
    exported = deployed('instance-seg_onnxruntime_dynamic.py')
    argv = [exported.deploy_cfg, exported.model_cfg, '--model', exported.record['files']['onnx'],
            '--checkpoint', exported.checkpoint]
    record = test_main(argv + ['--batch-size', '2', '--work-dir', str(tmp_path / 'b2')])
    assert record['batch_size'] == 2
    assert set(record['main_metrics']) == {'coco/bbox_mAP', 'coco/segm_mAP'}
    for main in record['main_metrics'].values():
        assert abs(main['drop_points']) < 0.05
    static = deployed('detection_onnxruntime_static-800x1344.py')
    with pytest.raises(SystemExit) as exit_info:
        test_main([static.deploy_cfg, static.model_cfg, '--model',
                   static.record['files']['onnx'], '--batch-size', '2'])
    assert str(exit_info.value.code) == (
        '[evit_mm test] --batch-size 2, but a static deploy config exports a graph for batch 1: '
        'use --batch-size 1 or a dynamic deploy config (configs/deploy/*_dynamic.py).')


def _tiny_ir(path: Path) -> str:
    """A three-convolution float model as an OpenVINO IR (input ``input``), seeded."""
    import openvino as ov
    from evit_mm.deployment.backends import legacy_onnx_exporter
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.Conv2d(16, 4, 1)).eval()
    onnx_file = str(path.with_suffix('.onnx'))
    with legacy_onnx_exporter():
        torch.onnx.export(model, (torch.randn(1, 3, 24, 24),), onnx_file, input_names=['input'],
                          output_names=['output'], opset_version=11)
    ov.save_model(ov.convert_model(onnx_file), str(path), compress_to_fp16=False)
    return str(path)


def test_accuracy_control_puts_operations_back_in_float_until_the_drop_holds(tmp_path):
    """quantize_int8 under NNCF's accuracy control, with a score that every quantized
    operation costs (the relative error of the outputs, in points): the fully quantized model
    loses more than accepted, operations go back to float until the drop holds, and the report
    (read from NNCF's log) lists them with the drop of each step."""
    import openvino as ov
    from evit_mm.deployment.quantize import AccuracyControl, quantize_int8
    xml = _tiny_ir(tmp_path / 'tiny.xml')
    rng = np.random.RandomState(0)
    inputs = [torch.from_numpy(rng.randn(1, 3, 24, 24).astype(np.float32)) for _ in range(8)]
    reference = ov.Core().compile_model(xml, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    expected = [reference(x.numpy())[0] for x in inputs]

    def validate(compiled, items, each=False):
        errors = [100 * np.abs(compiled(inputs[i].numpy())[0] - expected[i]).mean()
                  / np.abs(expected[i]).mean() for i in items]
        return 100 - float(np.mean(errors)), ([-e for e in errors] if each else None)

    def prepare(index):
        return dict(inputs=inputs[int(index)], data_samples=[])

    plain = quantize_int8(xml, list(range(8)), prepare, str(tmp_path / 'ptq.xml'))
    assert plain == dict(method='ptq', file=str(tmp_path / 'ptq.xml'),
                         fake_quantize_ops=_quantized_layers(tmp_path / 'ptq.xml', ''))
    full_drop = 100 - validate(ov.Core().compile_model(plain['file'], 'CPU', {
        'INFERENCE_PRECISION_HINT': 'f32'}), range(8))[0]
    max_drop = 0.8 * full_drop  # one or two operations back in float meet it, not zero
    report = quantize_int8(xml, list(range(8)), prepare, str(tmp_path / 'ac.xml'),
                           accuracy=AccuracyControl(validate, list(range(8)), max_drop,
                                                    dict(score=0.0), ranking_images=4))
    assert report['method'] == 'accuracy_control' and report['validation_images'] == 8
    assert report['quantized_drop'] == pytest.approx(full_drop, rel=1e-3)
    assert report['quantized_drop'] > max_drop and report['steps']
    assert all(step['put_back_in_float'] for step in report['steps'])
    assert report['steps'][-1]['drop'] <= max_drop < report['quantized_drop']
    assert report['kept_in_float'] and set(report['kept_in_float']) <= {
        name for step in report['steps'] for name in step['put_back_in_float']}
    kept = ov.Core().compile_model(report['file'], 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    final_drop = 100 - validate(kept, range(8))[0]
    assert final_drop == pytest.approx(report['steps'][-1]['drop'], abs=1e-3)
    assert report['reached'] is True and report['quantized_operations'] == 3
    assert (report['fake_quantize_ops'] == _quantized_layers(Path(report['file']), '') <
            plain['fake_quantize_ops'])
    # a drop no quantized model meets: every operation tried in float, the report says so
    # (NNCF lists none as kept), and an IR with no int8 operation left is refused
    beyond = quantize_int8(xml, list(range(8)), prepare, str(tmp_path / 'beyond.xml'),
                           accuracy=AccuracyControl(validate, list(range(8)), -1.0,
                                                    dict(score=0.0), ranking_images=4))
    assert beyond['reached'] is False and beyond['fake_quantize_ops'] == 0
    assert beyond['kept_in_float'] == [step['put_back_in_float'][0] for step in beyond['steps']]
    assert len(set(beyond['kept_in_float'])) == 3
    with pytest.raises(DeployError, match=r"^beyond\.xml has no int8 operation left: NNCF's "
                       r'accuracy control put every quantized operation back in float'):
        deploy_module._check_quantized(beyond, 'beyond.xml', print)
    said = []  # not reached, some int8 left: said, and the metric check decides
    deploy_module._check_quantized(dict(beyond, fake_quantize_ops=2), 'beyond.xml', said.append)
    assert said == ["[evit_mm deploy] int8: NNCF's accuracy control could not keep the drop on "
                    'the val images within -1.00 points; 3 operations are in float. The metric '
                    'check on the test images decides.']


def test_accuracy_control_leaves_nncf_what_the_float_graph_has_not_spent(monkeypatch):
    """With labels at the head's resolution the float graph already loses against PyTorch on
    the val images: NNCF may spend only the rest of the accepted drop, and nothing when the
    labels alone lose it all; without the option PyTorch is not evaluated."""
    import types

    scores = {'pytorch': 70.4, 'graph': 70.0}
    evaluated = []

    class Evaluator:
        def __init__(self, cfg):
            pass

        def __len__(self):
            return 5

        def __call__(self, model, indices, each=False):
            evaluated.append(model.name)
            return {'mIoU': scores[model.name]}, None

    monkeypatch.setattr(deploy_module, 'ImageEvaluator', Evaluator)
    monkeypatch.setattr(deploy_module, 'validation_config', lambda *args: None)
    monkeypatch.setattr(deploy_module, 'compile_openvino', lambda *args: None)
    monkeypatch.setattr(deploy_module, 'OpenVINORunner', lambda *args: None)
    monkeypatch.setattr(deploy_module, 'backend_model_around',
                        lambda *args: types.SimpleNamespace(name='graph'))
    pytorch = types.SimpleNamespace(name='pytorch')
    labels = read_deploy_config(str(DEPLOY / 'segmentation_openvino-int8_dynamic.py'))
    logits = read_deploy_config(str(DEPLOY / 'segmentation_openvino_dynamic.py'))
    control = deploy_module._accuracy_control(pytorch, None, labels, 'end2end.xml', 1, None, 1.0)
    assert control.float_graph_drop == pytest.approx(0.4) and evaluated == ['graph', 'pytorch']
    assert control.max_drop == pytest.approx(0.6) and control.float_metrics == {'mIoU': 70.0}
    evaluated.clear()
    control = deploy_module._accuracy_control(pytorch, None, logits, 'end2end.xml', 1, None, 1.0)
    assert (control.float_graph_drop, control.max_drop, evaluated) == (0.0, 1.0, ['graph'])
    scores['pytorch'] = 71.2  # the labels alone lose more than accepted
    with pytest.raises(DeployError, match=r"^The float graph's label map at the decode head's "
                       r'resolution \(codebase_config.argmax_before_upsampling\) alone loses '
                       r'1\.20 points against PyTorch on 5 val images'):
        deploy_module._accuracy_control(pytorch, None, labels, 'end2end.xml', 1, None, 1.0)


@pytest.fixture
def pseudo_labelled(tmp_path, deployed):
    """The dynamic ONNX Runtime deployment and its model config whose test labels are the
    model's own detections at 160x120."""
    exported = deployed('detection_onnxruntime_dynamic.py')
    return exported, _pseudo_labelled_config(tmp_path, exported, (160, 120))


def test_metric_images_scores_a_sample_as_its_own_annotation_file_would(tmp_path,
                                                                        pseudo_labelled):
    """--metric-images 2 of the 4 test images: the metric of exactly those two (mmdet's
    CocoMetric would also count the other images' objects as missed), as with an annotation
    file that holds only them; the record and the summary say how many were used."""
    from evit_mm.deployment.evaluate import main as test_main
    exported, config = pseudo_labelled
    coco = json.loads((tmp_path / 'pseudo.json').read_text())
    assert len(coco['images']) == 4
    kept = {coco['images'][0]['id'], coco['images'][3]['id']}  # 2 of 4, spread evenly
    (tmp_path / 'two.json').write_text(json.dumps(dict(
        coco, images=[i for i in coco['images'] if i['id'] in kept],
        annotations=[a for a in coco['annotations'] if a['image_id'] in kept])))
    two = tmp_path / 'two.py'
    two.write_text(f"_base_ = '{config}'\n"
                   f"test_dataloader = dict(dataset=dict(ann_file='{tmp_path}/two.json'))\n"
                   f"test_evaluator = dict(ann_file='{tmp_path}/two.json')\n")
    argv = [exported.deploy_cfg, '--model', exported.record['files']['onnx']]
    sampled = test_main([argv[0], str(config), *argv[1:], '--metric-images', '2',
                         '--work-dir', str(tmp_path / 'sampled')])
    alone = test_main([argv[0], str(two), *argv[1:], '--work-dir', str(tmp_path / 'alone')])
    whole = test_main([argv[0], str(config), *argv[1:], '--work-dir', str(tmp_path / 'whole')])
    assert sampled['images'] == '2 of 4 test images, spread evenly'
    assert alone['images'] == 'all 2 test images' and whole['images'] == 'all 4 test images'
    assert sampled['metrics']['coco/bbox_mAP'] == pytest.approx(alone['metrics']['coco/bbox_mAP'])
    assert sampled['metrics']['coco/bbox_mAP'] > 0.05
    assert sampled['speed']['images_timed'] <= 2
    # a test dataset that keeps some of its images (indices) is sampled among those
    subset = tmp_path / 'subset.py'
    subset.write_text(f"_base_ = '{config}'\n"
                      'test_dataloader = dict(dataset=dict(indices=[1, 2, 3]))\n')
    images = sample_test_images(load_config(str(subset), pretrained=False), 2)
    assert (images.indices, images.img_ids) == ([1, 3], [coco['images'][i]['id'] for i in (1, 3)])
    # mmengine's integer indices: the first N images, or (negative) the last -N
    for kept, expected in ((3, [0, 2]), (-3, [1, 3]), (-9, [0, 3])):
        subset.write_text(f"_base_ = '{config}'\n"
                          f'test_dataloader = dict(dataset=dict(indices={kept}))\n')
        images = sample_test_images(load_config(str(subset), pretrained=False), 2)
        assert images.indices == expected, kept
    with pytest.raises(DeployError, match=r'^--metric-images -2: give a number of test images'):
        sample_test_images(load_config(str(config), pretrained=False), -2)


class _DetectsNothing(torch.nn.Module):
    """A detector's predictions with every detection dropped."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def test_step(self, batch):
        outputs = self.model.test_step(batch)
        for sample in outputs:
            sample.pred_instances = sample.pred_instances[:0]
        return outputs


def test_validation_scores_a_model_that_detects_nothing_zero(tmp_path, pseudo_labelled):
    """Accuracy control's evaluator gives every variant a score, each image too: an image
    (or a whole sample) with no detections scores 0 points (mmdet's CocoMetric gives no
    metric then), and the float model's own labels score 100."""
    exported, config = pseudo_labelled
    evaluator = ImageEvaluator(load_config(str(config), pretrained=False))
    found, each = evaluator(exported.pair.model, [0, 3], each=True)
    assert found['coco/bbox_mAP'] == pytest.approx(100, abs=0.5)
    assert [image['coco/bbox_mAP'] for image in each] == pytest.approx([100, 100], abs=0.5)
    found, each = evaluator(_DetectsNothing(exported.pair.model), [0, 3], each=True)
    assert found == {'coco/bbox_mAP': 0.0} and each == [found, found]
    # its first validation too, and a test run (tools/deployment/test.py, benchmark.py)
    first = ImageEvaluator(load_config(str(config), pretrained=False))
    assert first(_DetectsNothing(exported.pair.model), [1])[0] == {'coco/bbox_mAP': 0.0}
    cfg = reference_config(load_config(str(config), pretrained=False))
    metrics, _ = run_test(_DetectsNothing(exported.pair.model), cfg, str(tmp_path / 'nothing'))
    assert main_metrics(metrics, 'mmdet') == {'coco/bbox_mAP': 0.0}


def test_benchmark_gives_every_runtime_its_metric_and_speed_and_reuses_its_files(
        tmp_path, deployed, pseudo_labelled, capsys, monkeypatch):
    """tools/deployment/benchmark.py on a detector whose test labels are its own detections:
    PyTorch, ONNX Runtime and OpenVINO f32 with PyTorch's metric (drop 0), bf16 on a CPU
    without bf16 units listed with the reason, one table, a JSON record naming the CPU; the
    ONNX file an earlier run left in the work dir is reused, not exported again."""
    import shutil

    from evit_mm.deployment import quantize
    from evit_mm.deployment.benchmark import _existing_file, dynamic_deploy_config
    from evit_mm.deployment.benchmark import main as benchmark_main, mark_exported
    exported, config = pseudo_labelled
    deploy_cfgs = {runtime: read_deploy_config(dynamic_deploy_config('ObjectDetection', runtime,
                                                                     'f32'))
                   for runtime in ('onnxruntime', 'openvino')}
    earlier = tmp_path / 'bench' / 'onnxruntime_f32' / 'end2end.onnx'
    earlier.parent.mkdir(parents=True)
    shutil.copy(exported.record['files']['onnx'], earlier)
    exported_at = earlier.stat().st_mtime_ns
    openvino = Path(deployed('detection_openvino_dynamic.py').record['files']['openvino_xml'])
    (tmp_path / 'bench' / 'openvino_f32').mkdir()
    for suffix in ('.xml', '.bin'):
        shutil.copy(openvino.with_suffix(suffix),
                    tmp_path / 'bench' / 'openvino_f32' / f'end2end{suffix}')
    for runtime in ('onnxruntime', 'openvino'):  # as an earlier run of this model
        mark_exported(str(tmp_path / 'bench' / f'{runtime}_f32'), str(config),
                      deploy_cfgs[runtime], exported.checkpoint)
    monkeypatch.setattr(quantize, 'cpu_flags', lambda: ['avx2', 'avx512f'])  # no bf16 units
    argv = [str(config), exported.checkpoint, '--runtimes', 'pytorch', 'onnxruntime',
            'openvino', '--precisions', 'f32', 'bf16', '--work-dir', str(tmp_path / 'bench'),
            '--rounds', '1']
    record = benchmark_main(argv)
    rows = {row['name']: row for row in record['rows']}
    assert list(rows) == ['pytorch f32', 'onnxruntime f32', 'openvino f32', 'openvino bf16']
    assert record['timing'] == dict(images=4, rounds=1, warmup_rounds=1)
    assert rows['pytorch f32']['ms'] == pytest.approx(1000 / rows['pytorch f32']['fps'])
    reference = rows['pytorch f32']['metrics']['coco/bbox_mAP']
    assert reference > 1
    for name in ('onnxruntime f32', 'openvino f32'):
        assert rows[name]['metrics']['coco/bbox_mAP'] == pytest.approx(reference, abs=0.05)
        assert rows[name]['drops']['coco/bbox_mAP'] == pytest.approx(
            reference - rows[name]['metrics']['coco/bbox_mAP'])
        assert rows[name]['speedup'] == pytest.approx(rows[name]['fps']
                                                      / rows['pytorch f32']['fps'])
        assert rows[name]['size_mb'] > 1
    assert rows['openvino bf16']['not_run'].startswith('bf16 needs a CPU with bf16 units')
    assert rows['onnxruntime f32']['file'] == str(earlier)
    assert earlier.stat().st_mtime_ns == exported_at  # reused, not exported again
    saved = json.loads((tmp_path / 'bench/benchmark.json').read_text())
    assert saved == json.loads(json.dumps(record))
    assert saved['cpu_flags'] == cpu_flags() and saved['threads'] == torch.get_num_threads()
    assert saved['input'].startswith('test resize 160x120 (keep_ratio=True)')
    assert saved['images'] == 'all 4 test images' and re.fullmatch(r'\d{4}-\d\d-\d\d',
                                                                   saved['date'])
    printed = capsys.readouterr().out
    assert '| runtime | coco/bbox_mAP | drop | FPS | speed-up | file size |' in printed
    assert f"| onnxruntime f32 | {rows['onnxruntime f32']['metrics']['coco/bbox_mAP']:.2f} |" \
        in printed and saved['device_name'] in printed
    # not reused for another deploy config or a changed model config (their bases too)
    ort_dir = str(tmp_path / 'bench' / 'onnxruntime_f32')
    assert _existing_file(ort_dir, 'onnxruntime', 'f32', str(config), deploy_cfgs['onnxruntime'],
                          exported.checkpoint) == str(earlier)
    assert _existing_file(ort_dir, 'onnxruntime', 'f32', str(config), deploy_cfgs['openvino'],
                          exported.checkpoint) is None
    # the checkpoint changed since (trained on): exported again
    checkpoint_copy = tmp_path / 'retrained.pth'
    shutil.copy(exported.checkpoint, checkpoint_copy)
    mark_exported(ort_dir, str(config), deploy_cfgs['onnxruntime'], str(checkpoint_copy))
    os.utime(checkpoint_copy, ns=(exported_at + 10**9, exported_at + 10**9))
    again = benchmark_main([str(config), str(checkpoint_copy), '--runtimes', 'onnxruntime',
                            '--work-dir', str(tmp_path / 'bench'), '--rounds', '1'])
    assert earlier.stat().st_mtime_ns != exported_at
    assert again['rows'][0]['metrics'] == pytest.approx(rows['onnxruntime f32']['metrics'],
                                                        abs=0.05)
    assert _existing_file(ort_dir, 'onnxruntime', 'f32', str(config), deploy_cfgs['onnxruntime'],
                          str(checkpoint_copy)) == str(earlier)  # marked by that export
    with open(config, 'a') as f:  # the model config edited in place
        f.write('model = dict(test_cfg=dict(score_thr=0.3))\n')
    assert _existing_file(ort_dir, 'onnxruntime', 'f32', str(config), deploy_cfgs['onnxruntime'],
                          str(checkpoint_copy)) is None


def test_benchmark_times_every_runtime_on_the_same_images_one_at_a_time(pseudo_labelled,
                                                                        monkeypatch):
    """benchmark.py's timing: each runtime's test_step on the same evaluated images (spread
    evenly over the sample), one image per call even when the config batches two, a warm-up
    round and then the rounds, in alternation; the median round's seconds."""
    import time

    from evit_mm.deployment import benchmark as bench
    _, config = pseudo_labelled
    cfg = load_config(str(config), pretrained=False)
    cfg.test_dataloader.batch_size = 2
    images = sample_test_images(cfg, 3)  # 3 of the 4 test images: 0, 1 and 3
    monkeypatch.setattr(bench, 'TIMED_IMAGES', 2)  # of those: 0 and 3
    calls = []

    class Sleeps:
        def __init__(self, name: str, seconds: float) -> None:
            self.name, self.seconds = name, seconds

        def test_step(self, batch: dict) -> list:
            assert len(batch['inputs']) == len(batch['data_samples']) == 1
            calls.append((self.name, Path(batch['data_samples'][0].img_path).name))
            time.sleep(self.seconds)
            return batch['data_samples']

    seconds, count = bench._time_in_alternation(
        {'fast': (Sleeps('fast', 0.01), cfg), 'slow': (Sleeps('slow', 0.03), cfg)}, images, 2)
    dataset = bench.build_test_dataset(cfg)
    names = [Path(dataset.get_data_info(i)['img_path']).name for i in (0, 3)]
    assert images.indices == [0, 1, 3] and count == 2
    assert calls == [(runtime, name) for _ in range(3) for runtime in ('fast', 'slow')
                     for name in names]
    assert 0.02 <= seconds['fast'] < seconds['slow'] and seconds['slow'] >= 0.06


def test_benchmark_int8_method_replaces_the_deploy_configs(pseudo_labelled, tmp_path,
                                                           monkeypatch):
    """--int8-method ptq reaches the int8 export (the deploy config says accuracy_control);
    an unknown method or no timing round is refused."""
    from evit_mm.deployment import benchmark as bench
    exported, config = pseudo_labelled
    methods = []

    def export_and_load(deploy_cfg, *args, **kwargs):
        methods.append(deploy_cfg.calib_config['method'])
        raise DeployError('stopped after the deploy config')

    monkeypatch.setattr(bench, 'export_and_load', export_and_load)
    monkeypatch.setattr(bench, 'precision_support', lambda precision: None)
    for method in (None, 'ptq'):
        record = bench.benchmark(str(config), exported.checkpoint, str(tmp_path / 'b'),
                                 runtimes=['openvino'], precisions=['int8'], int8_method=method)
        assert record['rows'] == [dict(name='openvino int8',
                                       not_run='stopped after the deploy config')]
    assert methods == ['accuracy_control', 'ptq']
    with pytest.raises(DeployError, match=r"--int8-method qat: use one of accuracy_control, ptq"):
        bench.benchmark(str(config), exported.checkpoint, str(tmp_path / 'b'), int8_method='qat')
    with pytest.raises(DeployError, match=r'--rounds 0: time at least one round'):
        bench.benchmark(str(config), exported.checkpoint, str(tmp_path / 'b'), rounds=0)


def test_nothing_detected_fills_only_a_coco_metric_that_gave_nothing(tmp_path):
    """0 points for the mAPs of a CocoMetric that gave no metric (nothing detected), never for
    one that gave some, was asked for other items, only formats results, or is LVIS's."""
    from types import SimpleNamespace

    from mmdet.evaluation import CocoMetric, LVISMetric

    def filled(metric, metrics):
        return with_nothing_detected(SimpleNamespace(metrics=[metric]), metrics)

    both = CocoMetric(metric=['bbox', 'segm'])
    assert filled(both, {}) == {'coco/bbox_mAP': 0.0, 'coco/segm_mAP': 0.0}
    found = {'coco/bbox_mAP': 0.3, 'coco/segm_mAP': 0.2}
    assert filled(both, found) == found
    assert filled(CocoMetric(metric='bbox', prefix='val'), {}) == {'val/bbox_mAP': 0.0}
    assert filled(CocoMetric(metric='bbox', metric_items=['mAP_50']),
                  {'coco/bbox_mAP_50': 0.5}) == {'coco/bbox_mAP_50': 0.5}
    assert filled(CocoMetric(format_only=True, outfile_prefix=str(tmp_path / 'r')), {}) == {}
    lvis = LVISMetric.__new__(LVISMetric)  # its constructor needs the lvis package
    lvis.__dict__.update(both.__dict__)
    assert filled(lvis, {}) == {}
