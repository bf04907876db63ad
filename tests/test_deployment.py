"""End-to-end deployment with mmdeploy: export, ONNX Runtime / OpenVINO parity, the CLI.

The models carry random weights with a classifier bias raised so that the test image
gets confident detections (random weights alone give none above the 0.3 threshold).
Shapes are small so that each export takes seconds.
"""
import json
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import onnx
import pytest
import torch
from mmengine.structures import InstanceData

from evit_mm.config import build_model, load_config
from evit_mm.deployment import deploy as deploy_module
from evit_mm.deployment.backends import legacy_onnx_exporter
from evit_mm.deployment.parity import (ParityReport, Tolerances, compare_instances,
                                       compare_label_maps)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / 'configs' / 'deploy'
RETINANET = str(REPO / 'configs/detection/retinanet_evit_m4.py')
MASK_RCNN = str(REPO / 'configs/detection/mask_rcnn_evit_m4.py')
FPN = str(REPO / 'configs/segmentation/fpn_evit_m4_ade20k.py')
STANDARD_DOMAINS = {'', 'ai.onnx'}


@pytest.mark.parametrize('path', sorted(DEPLOY.glob('*.py')), ids=lambda p: p.stem)
def test_deploy_configs_are_mmdeploy_configs(path):
    from mmdeploy.utils import (get_backend, get_codebase, get_input_shape, get_task_type,
                                load_config)
    cfg = load_config(str(path))[0]  # mmdeploy's own reader and accessors
    name = path.stem
    assert get_backend(cfg).value == ('openvino' if 'openvino' in name else 'onnxruntime')
    assert get_codebase(cfg).value == ('mmseg' if name.startswith('segmentation') else 'mmdet')
    assert get_task_type(cfg).value == ('Segmentation' if name.startswith('segmentation')
                                        else 'ObjectDetection')
    shape = get_input_shape(cfg)
    if 'static' in name:
        height, width = map(int, name.split('-')[-1].split('x'))
        assert shape == [width, height]  # mmdeploy's order
    else:
        assert shape is None and cfg.onnx_config.dynamic_axes['input'] == {
            0: 'batch', 2: 'height', 3: 'width'}
    if name.startswith('instance-seg'):
        assert cfg.onnx_config.output_names == ['dets', 'labels', 'masks']


def _image(path: Path, height: int, width: int, seed: int) -> str:
    rng = np.random.RandomState(seed)
    img = np.full((height, width, 3), 90, np.uint8)
    for _ in range(6):
        y, x = rng.randint(0, height - 40), rng.randint(0, width - 40)
        img[y:y + rng.randint(20, 60), x:x + rng.randint(20, 80)] = rng.randint(0, 255, 3)
    mmcv.imwrite(img, str(path))
    return str(path)


@pytest.fixture(scope='module')
def images(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('images')
    return dict(wide=_image(root / 'wide.jpg', 300, 420, 0),
                tall=_image(root / 'tall.jpg', 410, 270, 1))


def _checkpoint(config: str, path: Path) -> str:
    torch.manual_seed(0)  # PyTorch's default init: well spread scores, unlike the heads' own
    model = build_model(load_config(config, pretrained=False))
    with torch.no_grad():
        if hasattr(model, 'roi_head'):
            model.roi_head.bbox_head.fc_cls.bias[0] = 6.0
        elif hasattr(model, 'bbox_head'):
            model.bbox_head.retina_cls.bias.fill_(-0.5)
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('ckpt')
    return {name: _checkpoint(cfg, root / f'{name}.pth')
            for name, cfg in [('retinanet', RETINANET), ('mask_rcnn', MASK_RCNN), ('fpn', FPN)]}


def _small(tmp_path: Path, base: str, width: int, height: int) -> str:
    """A deploy config inheriting one of ours at a small fixed shape."""
    text = f"_base_ = ['{DEPLOY / base}']\n"
    if 'dynamic' not in base:
        text += f'onnx_config = dict(input_shape=[{width}, {height}])\n'
    if 'openvino' in base:
        text += (f'backend_config = dict(model_inputs=[dict(opt_shapes=dict('
                 f'input=[1, 3, {height}, {width}]))])\n')
    path = tmp_path / f'small_{base}'
    path.write_text(text)
    return str(path)


def _run(tmp_path, deploy_cfg, model_cfg, checkpoint, image, *extra) -> dict:
    record = deploy_module.main([deploy_cfg, model_cfg, checkpoint, image, '--work-dir',
                                 str(tmp_path / 'out'), '--iters', '1', *extra])
    assert json.loads((tmp_path / 'out' / 'deploy_record.json').read_text()) == record
    onnx_model = onnx.load(record['files']['onnx'])
    assert {node.domain for node in onnx_model.graph.node} <= STANDARD_DOMAINS
    for backend in ('pytorch', record['backend']):
        assert record['speed'][backend]['fps'] > 0
    assert record['fused'] is True and record['threads'] == torch.get_num_threads()
    return record


def _assert_parity(record: dict, min_compared: int) -> None:
    for path, parity in record['parity'].items():
        assert parity['ok'] and not parity['failures'], (path, parity)
        assert parity['compared'] >= min_compared, (path, parity)


@pytest.mark.parametrize('base', ['detection_onnxruntime_static-800x1344.py',
                                  'detection_openvino_static-800x1344.py'])
def test_retinanet_end_to_end(tmp_path, images, checkpoints, base):
    export = torch.onnx.export
    record = _run(tmp_path, _small(tmp_path, base, 320, 256), RETINANET,
                  checkpoints['retinanet'], images['wide'])
    assert record['backend'] == ('openvino' if 'openvino' in base else 'onnxruntime')
    assert record['input_shape'] == [1, 3, 256, 320] and record['static'] is True
    _assert_parity(record, min_compared=20)
    worst = record['parity'][images['wide']]['worst']
    assert worst['box_iou'] >= 0.99 and worst['score_diff'] <= 1e-3
    if 'openvino' in base:
        assert Path(record['files']['openvino_xml']).with_suffix('.bin').is_file()
    # nothing stays patched once the tool has exported
    from torch.onnx import symbolic_opset9
    assert torch.onnx.export is export and not hasattr(symbolic_opset9, '_cast_Long')


def _test_scale(tmp_path: Path, base: str, scale: tuple) -> str:
    """The model config with a smaller test resize (keeping the ratio), for quick exports."""
    path = tmp_path / f'scaled_{Path(base).name}'
    path.write_text(
        f"_base_ = '{base}'\n"
        "test_dataloader = dict(dataset=dict(pipeline=[dict(type='LoadImageFromFile'),\n"
        f"    dict(type='Resize', scale={scale}, keep_ratio=True),\n"
        "    dict(type='LoadAnnotations', with_bbox=True),\n"
        "    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',\n"
        "                                          'img_shape', 'scale_factor'))]))\n")
    return str(path)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_dynamic_detection_at_two_sizes(tmp_path, images, checkpoints, backend):
    config = _test_scale(tmp_path, RETINANET, (512, 384))
    record = _run(tmp_path, str(DEPLOY / f'detection_{backend}_dynamic.py'), config,
                  checkpoints['retinanet'], images['wide'], '--test-img', images['tall'])
    assert record['static'] is False
    shapes = {path: p['input_shape'] for path, p in record['parity'].items()}
    assert shapes[images['wide']] != shapes[images['tall']]  # both at their own (resized) size
    assert shapes[images['tall']][2] > shapes[images['tall']][3]
    _assert_parity(record, min_compared=20)


def test_mask_rcnn_onnxruntime(tmp_path, images, checkpoints):
    record = _run(tmp_path, _small(tmp_path, 'instance-seg_onnxruntime_static-800x1344.py',
                                   320, 256), MASK_RCNN, checkpoints['mask_rcnn'],
                  images['wide'])
    _assert_parity(record, min_compared=20)
    assert record['parity'][images['wide']]['worst']['mask_iou'] >= 0.98


@pytest.mark.parametrize('base', ['segmentation_onnxruntime_static-512x512.py',
                                  'segmentation_openvino_static-512x512.py'])
def test_semantic_fpn_end_to_end(tmp_path, images, checkpoints, base):
    sdk = 'onnxruntime' in base
    record = _run(tmp_path, _small(tmp_path, base, 256, 256), FPN, checkpoints['fpn'],
                  images['wide'], *(['--dump-info'] if sdk else []))
    _assert_parity(record, min_compared=300 * 420)  # every pixel of the original image
    assert record['parity'][images['wide']]['worst']['pixel_agreement'] >= 0.999
    if sdk:  # mmdeploy's SDK description of the model
        pipeline = json.loads((tmp_path / 'out' / 'pipeline.json').read_text())
        assert pipeline['pipeline']['tasks'][0]['type'] == 'Task'
        assert (tmp_path / 'out' / 'deploy.json').is_file()


def test_parity_failure_exits_nonzero_and_keeps_the_record(tmp_path, images, checkpoints,
                                                          monkeypatch, capsys):
    def disagree(expected, got, tolerances=None):
        return ParityReport(compared=3, failures=['detection 0: score differs by 2e-2 > 1e-3'])
    monkeypatch.setattr(deploy_module, 'compare_results', disagree)
    with pytest.raises(SystemExit) as exit_info:
        deploy_module.main([_small(tmp_path, 'segmentation_onnxruntime_static-512x512.py',
                                   128, 128), FPN, checkpoints['fpn'], images['wide'],
                            '--work-dir', str(tmp_path / 'out'), '--iters', '1'])
    message = str(exit_info.value.code)
    assert 'PARITY FAILED' in message and 'score differs by 2e-2' in message
    record = json.loads((tmp_path / 'out' / 'deploy_record.json').read_text())
    assert record['parity'][images['wide']]['ok'] is False


def test_user_errors_are_one_line(tmp_path, images, checkpoints):
    static = str(DEPLOY / 'segmentation_onnxruntime_static-512x512.py')
    cases = [([str(tmp_path / 'nope.py'), FPN, checkpoints['fpn'], images['wide']],
              'Deploy config'),
             ([static, FPN, str(tmp_path / 'missing.pth'), images['wide']], 'not found'),
             ([static, FPN, checkpoints['fpn'], str(tmp_path / 'missing.jpg')],
              'Image'),
             ([static, RETINANET, checkpoints['fpn'], images['wide']],
              'segmentation_onnxruntime_static-512x512.py is a Segmentation deploy config, but '
              f'{RETINANET} is a ObjectDetection model. Use one of configs/deploy/'
              '{detection_onnxruntime_dynamic.py,'),
             ([str(DEPLOY / 'detection_onnxruntime_dynamic.py'), RETINANET, checkpoints['fpn'],
               images['wide']], 'unexpected')]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            deploy_module.main(argv + ['--work-dir', str(tmp_path / 'out')])
        assert expected in str(exit_info.value.code), (argv, exit_info.value.code)


def test_missing_mmdeploy_names_the_extra(tmp_path):
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] == 'mmdeploy':\n"
               "            raise ImportError('blocked for the test')\n"
               "sys.meta_path.insert(0, Block())\n"
               "sys.argv = ['deploy.py'] + sys.argv[1:]\n"
               "from evit_mm.deployment.deploy import main\n"
               "main()\n")
    result = subprocess.run(
        [sys.executable, '-c', blocker, str(DEPLOY / 'detection_onnxruntime_dynamic.py'),
         RETINANET, 'x.pth', 'x.jpg'], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert "mmdeploy, which is not installed: pip install 'evit_mm[deploy]'" in result.stderr
    assert 'Traceback' not in result.stderr


def test_legacy_exporter_is_scoped():
    export = torch.onnx.export
    with pytest.raises(RuntimeError):
        with legacy_onnx_exporter():
            assert torch.onnx.export.keywords == {'dynamo': False}
            raise RuntimeError('export failed')
    assert torch.onnx.export is export


def _instances(boxes, scores, labels, masks=None) -> InstanceData:
    data = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                        scores=torch.tensor(scores), labels=torch.tensor(labels))
    if masks is not None:
        data.masks = masks
    return data


def test_parity_rules():
    ref = _instances([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 5, 5]], [0.9, 0.8, 0.2],
                     [1, 2, 3])
    assert compare_instances(ref, ref).ok
    assert compare_instances(ref, ref).compared == 2  # the 0.2 detection is below 0.3
    moved = _instances([[0, 0, 10, 10], [21, 20, 40, 40]], [0.9, 0.8], [1, 2])
    report = compare_instances(ref, moved)
    assert not report.ok and 'best IoU' in report.failures[0]
    assert report.worst['box_iou'] == pytest.approx(19 * 20 / 400)
    rescored = _instances([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8021], [1, 2])
    assert 'score differs by 2.10e-03' in compare_instances(ref, rescored).failures[0]
    relabeled = _instances([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 5])
    assert 'no detection of this label' in compare_instances(ref, relabeled).failures[0]
    masks = torch.zeros(3, 50, 50, dtype=torch.bool)
    masks[0, :10, :10] = True
    masks[1, 20:40, 20:40] = True
    other = masks.clone()
    other[1, 20:40, 20] = False  # IoU 380 / 400 = 0.95
    ref.masks = masks
    report = compare_instances(ref, _instances(ref.bboxes.tolist(), ref.scores.tolist(),
                                               ref.labels.tolist(), other))
    assert report.worst['mask_iou'] == pytest.approx(0.95)
    assert 'mask IoU 0.9500 < 0.98' in report.failures[0]
    labels = torch.zeros(1, 100, 100, dtype=torch.long)
    changed = labels.clone()
    changed[0, 0, :10] = 1  # 99.9 % agree: still fine
    assert compare_label_maps(labels, changed).ok
    changed[0, 1, :1] = 1
    assert not compare_label_maps(labels, changed).ok
    assert 'shapes differ' in compare_label_maps(labels, labels[:, :50]).failures[0]
    assert Tolerances().box_iou == 0.99 and Tolerances().mask_iou == 0.98


def test_pre_nms_selection_is_mmdets():
    """The export keeps the same (anchor, class) pairs as mmdet, not mmdeploy's per-anchor top-k."""
    from mmdet.models.utils import filter_scores_and_topk

    from evit_mm.deployment.rewrites import _pairs_topk
    torch.manual_seed(0)
    scores = torch.rand(1, 50, 4)
    boxes, priors = torch.rand(1, 50, 4), torch.rand(1, 50, 4)
    one_hot, got_boxes, got_priors = _pairs_topk(scores, boxes, priors, nms_pre=20)
    _, labels, anchors, _ = filter_scores_and_topk(scores[0], 0.0, 20)
    expected = set(zip(anchors.tolist(), labels.tolist()))
    kept = one_hot[0].nonzero()  # (pair, class) of the kept scores
    assert len(kept) == 20
    assert {(int(anchors_of), int(label)) for anchors_of, label in zip(
        [((got_boxes[0, p] == boxes[0]).all(1)).nonzero().item() for p in kept[:, 0]],
        kept[:, 1])} == expected
    assert torch.equal(got_priors[0, kept[:, 0]], priors[0, [a for a, _ in sorted(
        expected, key=lambda pair: -scores[0, pair[0], pair[1]].item())]])
    # mmdeploy's own selection (best 20 anchors, every class of each) keeps other pairs
    per_anchor = scores[0].max(1).values.topk(20).indices
    assert {(a, c) for a in per_anchor.tolist() for c in range(4)} != expected
