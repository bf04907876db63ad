"""End-to-end deployment with mmdeploy: export, ONNX Runtime / OpenVINO parity, the CLI.

The detectors carry seeded weights whose confident boxes grow past the image, on a test scale
whose resized sides are not multiples of 32 (:mod:`deploy_helpers`); each detection deploy
config is exported once per session (``deployed`` in conftest.py) and read by several tests.
"""
import copy
import json
import subprocess
import sys
from pathlib import Path

import mmcv
import pytest
import torch

from evit_mm.deployment import deploy as deploy_module
from evit_mm.deployment.backends import legacy_onnx_exporter
from evit_mm.deployment.deploy_config import read_deploy_config
from evit_mm.deployment.parity import (ParityReport, Tolerances, compare_instances,
                                       compare_label_maps, compare_results)
from evit_mm.errors import DeployError

from deploy_helpers import (DEPLOY, FPN, RETINANET, SHARED_DETECTION, assert_parity, instances,
                            run_deploy, small_deploy_config)

BORDERS = {'left', 'top', 'right', 'bottom'}


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


@pytest.mark.parametrize('name', SHARED_DETECTION, ids=lambda n: n[:-3])
def test_detection_deployment(deployed, images, name):
    """The record of a detection deployment: parity both ways on a landscape and a portrait
    image, the input each was run at, the backend files (nothing left patched: run_deploy)."""
    record = deployed(name).record
    assert record['backend'] == ('openvino' if 'openvino' in name else 'onnxruntime')
    assert_parity(record, min_compared=20)
    shapes = {path: parity['input_shape'] for path, parity in record['parity'].items()}
    if 'static' in name:  # 330x250: mmdeploy's static resize, then padded to 352x256
        assert record['static'] is True and record['input_shape'] == [1, 3, 256, 352]
        assert set(map(tuple, shapes.values())) == {(1, 3, 256, 352)}
    else:  # each image at its own resized size
        assert record['static'] is False
        assert shapes[images['wide']] != shapes[images['tall']]
        assert shapes[images['tall']][2] > shapes[images['tall']][3]
    worst = record['parity'][images['wide']]['worst']
    assert worst['box_iou'] >= 0.99 and worst['score_diff'] <= 1e-3
    if name.startswith('instance-seg'):
        assert record['parity'][images['wide']]['worst']['mask_iou'] >= 0.98
    if 'openvino' in name:
        assert Path(record['files']['openvino_xml']).with_suffix('.bin').is_file()


def _borders(detections, height: int, width: int) -> set:
    """The image borders that confident boxes touch."""
    boxes = detections.bboxes[detections.scores > 0.3]
    return {name for name, column, value in (('left', 0, 0), ('top', 1, 0), ('right', 2, width),
                                             ('bottom', 3, height))
            if len(boxes) and float((boxes[:, column] - value).abs().min()) < 1e-3}


@pytest.mark.parametrize('name', SHARED_DETECTION, ids=lambda n: n[:-3])
def test_boxes_are_clipped_to_each_image(deployed, images, name):
    """On a landscape and a portrait image: the input is padded, PyTorch's detections touch
    every border (Mask R-CNN: of two confident classes per RoI, each with its own box), and
    the backend agrees both ways (masks too, at the image's size)."""
    pair = deployed(name).pair
    touched = set()
    for path in images.values():
        data = pair.prepare(path)
        meta = data['data_samples'][0].metainfo
        assert tuple(meta['img_shape']) != tuple(data['inputs'].shape[2:])  # padded input
        reference = deploy_module.predict(pair.model, data)[0]
        if name.startswith('instance-seg'):
            _assert_two_confident_classes(pair.model, reference.pred_instances)
        backend = deploy_module.predict(pair.backend_model, data)[0]
        report = compare_results(reference, backend)
        assert report.ok and report.compared >= 20, (path, report.failures[:5])
        touched |= _borders(reference.pred_instances, *mmcv.imread(path).shape[:2])
        if name.startswith('instance-seg'):
            masks = backend.pred_instances.masks
            assert tuple(masks.shape[1:]) == mmcv.imread(path).shape[:2]
    assert touched == BORDERS


def _assert_two_confident_classes(model, detections) -> None:
    """The test Mask R-CNN's RoIs score two classes confidently, and the boxes of the two
    differ (mmdet decodes a box per class; mmdeploy's RoI head gave every class the top
    class's box), so that parity checks the per-class path."""
    from deploy_helpers import TWO_CLASSES
    from evit_mm.deployment.parity import box_iou
    from evit_mm.deployment.rewrites import serves_two_stage
    assert serves_two_stage(model)
    confident = detections[detections.scores > 0.3]
    first, second = (confident[confident.labels == label] for label in TWO_CLASSES)
    assert len(first) >= 2 and len(second) >= 10, (len(first), len(second))
    assert float(box_iou(second.bboxes, first.bboxes).max()) < 0.9


def test_inputs_are_prepared_in_the_models_scope(deployed, images):
    """A detector's deployment prepares its inputs with mmdet's pipeline also after an mmseg
    model was built in the same process (which moves mmengine's default scope)."""
    from evit_mm.config import register_framework
    pair = deployed('detection_onnxruntime_dynamic.py').pair
    register_framework('mmseg')
    data = pair.prepare(images['tall'])
    assert type(data['data_samples'][0]).__name__ == 'DetDataSample'
    assert tuple(data['data_samples'][0].metainfo['img_shape']) == (330, 217)


@pytest.mark.parametrize('base', ['segmentation_onnxruntime_static-512x512.py',
                                  'segmentation_openvino_static-512x512.py'])
def test_semantic_fpn_end_to_end(tmp_path, images, weights, base):
    sdk = 'onnxruntime' in base
    record = run_deploy(tmp_path / 'out', small_deploy_config(tmp_path, base, 128, 128), FPN,
                        weights['fpn'], images['wide'], *(['--dump-info'] if sdk else [])).record
    assert record['input_shape'] == [1, 3, 128, 128]
    assert_parity(record, min_compared=300 * 420)  # every pixel of the original image
    assert record['parity'][images['wide']]['worst']['pixel_agreement'] >= 0.999
    if sdk:  # mmdeploy's SDK description of the model
        pipeline = json.loads((tmp_path / 'out' / 'pipeline.json').read_text())
        assert pipeline['pipeline']['tasks'][0]['type'] == 'Task'
        assert (tmp_path / 'out' / 'deploy.json').is_file()


def test_parity_failure_exits_nonzero_and_keeps_the_record(tmp_path, images, weights,
                                                          monkeypatch, capsys):
    def disagree(expected, got, tolerances=None):
        return ParityReport(compared=3, failures=['detection 0: score differs by 2e-2 > 1e-3'])
    monkeypatch.setattr(deploy_module, 'compare_results', disagree)
    with pytest.raises(SystemExit) as exit_info:
        deploy_module.main([small_deploy_config(tmp_path,
                                                'segmentation_onnxruntime_static-512x512.py',
                                                64, 64), FPN, weights['fpn'], images['wide'],
                            '--work-dir', str(tmp_path / 'out'), '--iters', '1'])
    message = str(exit_info.value.code)
    assert 'PARITY FAILED' in message and 'score differs by 2e-2' in message
    record = json.loads((tmp_path / 'out' / 'deploy_record.json').read_text())
    assert record['parity'][images['wide']]['ok'] is False


def test_user_errors_are_one_line(tmp_path, images, weights):
    static = str(DEPLOY / 'segmentation_onnxruntime_static-512x512.py')
    cases = [([str(tmp_path / 'nope.py'), FPN, weights['fpn'], images['wide']],
              'Deploy config'),
             ([static, FPN, str(tmp_path / 'missing.pth'), images['wide']], 'not found'),
             ([static, FPN, weights['fpn'], str(tmp_path / 'missing.jpg')],
              'Image'),
             ([static, RETINANET, weights['fpn'], images['wide']],
              'segmentation_onnxruntime_static-512x512.py is a Segmentation deploy config, but '
              f'{RETINANET} is a ObjectDetection model. Use one of configs/deploy/'
              '{detection_onnxruntime_dynamic.py,'),
             ([str(DEPLOY / 'detection_onnxruntime_dynamic.py'), RETINANET, weights['fpn'],
               images['wide']], 'unexpected')]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            deploy_module.main(argv + ['--work-dir', str(tmp_path / 'out')])
        assert expected in str(exit_info.value.code), (argv, exit_info.value.code)
    # mmdeploy's default segmentation output, the argmax: one line, before anything is exported
    argmax = tmp_path / 'argmax.py'
    argmax.write_text(f"_base_ = ['{static}']\ncodebase_config = dict(with_argmax=True)\n")
    with pytest.raises(SystemExit) as exit_info:
        deploy_module.main([str(argmax), FPN, weights['fpn'], images['wide'], '--work-dir',
                            str(tmp_path / 'argmax')])
    assert str(exit_info.value.code) == (
        "[evit_mm deploy] argmax.py exports the argmax (codebase_config.with_argmax is True, "
        "mmdeploy's default), so labels at the network's resolution, not mmseg's resized "
        "logits; set codebase_config = dict(type='mmseg', task='Segmentation', "
        'with_argmax=False), as configs/deploy/segmentation_*.py do.')
    assert not list((tmp_path / 'argmax').glob('*.onnx'))


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


def test_parity_rules():
    ref = instances([[0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 5, 5]], [0.9, 0.8, 0.2],
                     [1, 2, 3])
    assert compare_instances(ref, ref).ok
    assert compare_instances(ref, ref).compared == 2  # the 0.2 detection is below 0.3
    moved = instances([[0, 0, 10, 10], [21, 20, 40, 40]], [0.9, 0.8], [1, 2])
    report = compare_instances(ref, moved)
    assert not report.ok and 'best IoU' in report.failures[0]
    assert report.worst['box_iou'] == pytest.approx(19 * 20 / 400)
    rescored = instances([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8021], [1, 2])
    assert 'score differs by 2.10e-03' in compare_instances(ref, rescored).failures[0]
    relabeled = instances([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.8], [1, 5])
    assert 'no detection of this label' in compare_instances(ref, relabeled).failures[0]
    masks = torch.zeros(3, 50, 50, dtype=torch.bool)
    masks[0, :10, :10] = True
    masks[1, 20:40, 20:40] = True
    other = masks.clone()
    other[1, 20:40, 20] = False  # IoU 380 / 400 = 0.95
    ref.masks = masks
    report = compare_instances(ref, instances(ref.bboxes.tolist(), ref.scores.tolist(),
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


def test_near_ties_are_excused_only_at_a_real_max_per_img_cut():
    """A detection scoring like the other side's lowest may be missing there only where that
    side kept max_per_img detections; a wrong lowest detection fails otherwise."""
    ref = instances([[0, 0, 10, 10], [20, 20, 40, 40]], [0.9, 0.5], [1, 2])
    wrong_last = instances([[0, 0, 10, 10], [60, 60, 90, 90]], [0.9, 0.5], [1, 2])
    for tol in (Tolerances(), Tolerances(max_per_img=100), Tolerances(max_per_img=3)):
        report = compare_instances(ref, wrong_last, tol)
        assert not report.ok and 'best IoU' in report.failures[0], tol
    assert compare_instances(ref, wrong_last, Tolerances(max_per_img=2)).ok  # both cut at 2


def test_pre_nms_selection_is_mmdets():
    """The export keeps the same (anchor, class) pairs as mmdet, not mmdeploy's per-anchor top-k."""
    from mmdet.models.utils import filter_scores_and_topk

    from evit_mm.deployment.rewrites import _topk_pairs
    torch.manual_seed(0)
    scores = torch.rand(1, 50, 4)
    values, anchors, labels = _topk_pairs(scores, 20)
    _, expected_labels, expected_anchors, _ = filter_scores_and_topk(scores[0], 0.0, 20)
    expected = set(zip(expected_anchors.tolist(), expected_labels.tolist()))
    assert set(zip(anchors[0].tolist(), labels[0].tolist())) == expected
    assert torch.equal(values[0], scores[0, anchors[0], labels[0]])
    # mmdeploy's own selection (best 20 anchors, every class of each) keeps other pairs
    per_anchor = scores[0].max(1).values.topk(20).indices
    assert {(a, c) for a in per_anchor.tolist() for c in range(4)} != expected


def test_boxes_clip_to_their_own_image_and_small_ones_drop():
    """Per image of a batch: clipped to its [H, W]; mmdet's min_bbox_size (w and h > it)."""
    from evit_mm.deployment.rewrites import _pairs_above, clip_to_images, drop_small
    boxes = torch.tensor([[[-5., 10., 500., 300.]], [[-5., 10., 500., 300.]]])
    clipped = clip_to_images(boxes, torch.tensor([[200, 400], [250, 100]]))
    assert clipped.tolist() == [[[0, 10, 400, 200]], [[0, 10, 100, 250]]]
    flat = torch.tensor([[[0., 0., 10., 0.], [0., 0., 10., 3.], [0., 0., 2., 9.]]])
    scores = torch.tensor([[0.5, 0.6, 0.7]])
    assert torch.equal(drop_small(flat, scores, 0), torch.tensor([[0.0, 0.6, 0.7]]))
    assert torch.equal(drop_small(flat, scores, 2), torch.tensor([[0.0, 0.6, 0.0]]))
    assert drop_small(flat, scores, -1) is scores
    # softmax scores: fewer than 1 / score_thr pairs per RoI can pass it
    assert _pairs_above(1000, 80, 0.05, softmax=True) == 21000
    assert _pairs_above(1000, 80, 0.05, softmax=False) == 80000
    assert _pairs_above(10, 3, 0.05, softmax=True) == 30


@pytest.mark.parametrize('name', ['detection_onnxruntime_dynamic.py',
                                  'instance-seg_onnxruntime_dynamic.py'])
def test_a_batch_gives_each_image_its_own_result(deployed, images, name):
    """A landscape and a portrait image of different resized shapes in one batch: the backend
    gives each what PyTorch gives it in that batch, boxes clipped at its own borders (the
    graph used to clip every image to the first one's shape). RetinaNet: also what it gets
    alone. (mmdet pads a batch to its largest image, which moves Mask R-CNN's image-covering
    test boxes near the padded borders, in PyTorch as in the backend.)"""
    pair = deployed(name).pair
    paths = [images['wide'], images['tall']]
    batch = pair.prepare(paths)
    shapes = [tuple(sample.metainfo['img_shape']) for sample in batch['data_samples']]
    assert batch['inputs'].shape[0] == 2 and shapes[0] != shapes[1]
    in_batch = deploy_module.predict(pair.model, batch)
    results = deploy_module.predict(pair.backend_model, batch)
    for i, (path, result) in enumerate(zip(paths, results)):
        references = [in_batch[i]]
        if name.startswith('detection'):
            references.append(deploy_module.predict(pair.model, pair.prepare(path))[0])
        for reference in references:
            report = compare_results(reference, result)
            assert report.ok and report.compared >= 20, (path, report.failures[:5])
        assert _borders(result.pred_instances, *mmcv.imread(path).shape[:2]) == BORDERS


def test_static_graphs_refuse_batches(deployed, images):
    pair = deployed('detection_onnxruntime_static-800x1344.py').pair
    batch = pair.prepare([images['wide'], images['tall']])
    with pytest.raises(DeployError, match=r'^Given a batch of 2, but a static deploy config '
                                          r'exports a graph for batch 1: use batch size 1 '):
        deploy_module.predict(pair.backend_model, batch)


def test_min_bbox_size_is_applied_in_the_export(tmp_path, images, weights):
    """A RetinaNet whose test_cfg drops boxes no larger than 40 px: the export drops them too,
    measured at the network's scale (mmdet measures a dense head's after rescaling: no box of
    these images falls between the two)."""
    from deploy_helpers import odd_scale_config
    config = tmp_path / 'min_size.py'
    config.write_text(f"_base_ = '{odd_scale_config(tmp_path, RETINANET)}'\n"
                      'model = dict(test_cfg=dict(min_bbox_size=40))\n')
    deploy_cfg = read_deploy_config(small_deploy_config(
        tmp_path, 'detection_onnxruntime_static-800x1344.py', 200, 150))
    pair = deploy_module.export_and_load(deploy_cfg, str(config), weights['retinanet'],
                                         images['tall'], str(tmp_path / 'out'), 2)
    data = pair.prepare(images['tall'])
    reference, backend = (deploy_module.predict(model, data)[0]
                          for model in (pair.model, pair.backend_model))
    scale = data['data_samples'][0].metainfo['scale_factor']
    sides = backend.pred_instances.bboxes[:, 2:] - backend.pred_instances.bboxes[:, :2]
    assert float((sides * torch.tensor(scale)).min()) > 40 - 1e-3  # at the network's scale
    report = compare_results(reference, backend)
    assert report.ok and report.compared >= 10, report.failures[:5]


def test_dynamic_segmentation_runs_whole_images_at_the_test_scale(tmp_path, images, weights):
    """A dynamic config: each image at its own size after the test resize (odd sides, a
    landscape and a portrait one), labels equal to PyTorch's on every original pixel."""
    config = tmp_path / 'fpn_odd.py'
    config.write_text(f"_base_ = '{FPN}'\n"
                      "test_pipeline = [dict(type='LoadImageFromFile'),\n"
                      "    dict(type='Resize', scale=(200, 150), keep_ratio=True),\n"
                      "    dict(type='PackSegInputs')]\n"
                      "test_dataloader = dict(dataset=dict(pipeline=test_pipeline))\n")
    base = 'segmentation_openvino_dynamic.py'  # the same graph as ONNX Runtime's
    record = run_deploy(tmp_path / 'out', str(DEPLOY / base), str(config), weights['fpn'],
                        images['wide'], '--test-img', images['tall']).record
    assert record['static'] is False
    shapes = {path: parity['input_shape'] for path, parity in record['parity'].items()}
    assert shapes == {images['wide']: [1, 3, 143, 200], images['tall']: [1, 3, 200, 132]}
    assert_parity(record, min_compared=300 * 270)
    assert record['parity'][images['wide']]['compared'] == 300 * 420
    assert record['parity'][images['tall']]['compared'] == 410 * 270


def test_segmentation_post_processing_is_mmsegs_exactly():
    """The backend's post-processing gives mmseg's labels and logits bit for bit: at the
    original size, after cropping padding, after a resize, and with ties between classes
    (integer logits: the first maximum wins, as in torch)."""
    import types

    from mmseg.models.segmentors import BaseSegmentor
    from mmseg.structures import SegDataSample

    from evit_mm.deployment.backends import segmentation_results
    segmentor = types.SimpleNamespace(align_corners=False)
    segmentor.postprocess_result = types.MethodType(BaseSegmentor.postprocess_result, segmentor)
    torch.manual_seed(0)
    cases = [(dict(ori_shape=(37, 51)), (37, 51)),  # as the network saw it
             (dict(ori_shape=(30, 45), img_padding_size=[0, 6, 0, 7]), (37, 51)),  # padded
             (dict(ori_shape=(75, 101)), (37, 51))]  # resized
    for meta, shape in cases:
        for logits in (torch.randn(2, 19, *shape), torch.randint(0, 3, (2, 19, *shape)).float()):
            samples = [SegDataSample(metainfo=dict(meta)) for _ in range(2)]
            expected = segmentor.postprocess_result(logits, copy.deepcopy(samples))
            got = segmentation_results(logits, samples, segmentor)
            for want, have in zip(expected, got):
                assert torch.equal(want.pred_sem_seg.data, have.pred_sem_seg.data), meta
                assert torch.equal(want.seg_logits.data, have.seg_logits.data), meta
    assert torch.equal(segmentation_results(logits, None, segmentor)[0].pred_sem_seg.data,
                       logits[0].argmax(0, keepdim=True))  # no samples: mmseg's own


def test_head_resolution_labels_refuse_what_they_would_label_wrongly():
    """Labels at the head's resolution are whole-image, nearest-centre labels: a model tested
    with sliding windows or a head resizing with align_corners=True is refused."""
    from evit_mm.deployment.rewrites import HeadResolutionLabels
    from evit_mm.inference import build_inference_model
    model = build_inference_model(FPN, None)[0]
    assert HeadResolutionLabels(model).segmentor is model
    for change in (dict(test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(32, 32))),
                   dict(align_corners=True)):
        model.test_cfg = change.get('test_cfg', dict(mode='whole'))
        model.decode_head.align_corners = change.get('align_corners', False)
        with pytest.raises(DeployError, match=r"^codebase_config.argmax_before_upsampling "
                           r"labels whole images .* test_cfg.mode='slide' or a head with "
                           r'align_corners=True is not labelled that way'):
            HeadResolutionLabels(model)


def _nearest_centres(labels: torch.Tensor, size) -> torch.Tensor:
    """``[h, w]`` labels at ``size``: each pixel takes the label whose pixel holds its centre."""
    rows = ((torch.arange(size[0]) + 0.5) * labels.shape[0] / size[0]).floor().long()
    cols = ((torch.arange(size[1]) + 0.5) * labels.shape[1] / size[1]).floor().long()
    return labels[rows][:, cols]


def test_head_resolution_labels_reach_the_original_size_by_pixel_centres():
    """argmax_before_upsampling's post-processing: a label map at the head's resolution goes
    to the original size by nearest pixel centre; where the input was padded, first to the
    input, the padding cropped, then to the original size."""
    from mmseg.structures import SegDataSample

    from evit_mm.deployment.backends import label_map_results
    torch.manual_seed(0)
    labels = torch.randint(0, 150, (2, 1, 10, 13))
    cases = [(dict(ori_shape=(40, 52)), None),  # the input size: 4x each way
             (dict(ori_shape=(75, 101)), None),  # resized: not a whole factor
             (dict(ori_shape=(35, 41), img_padding_size=[0, 11, 0, 5]), (5, 11))]  # padded
    for meta, padding in cases:
        samples = [SegDataSample(metainfo=dict(meta)) for _ in range(2)]
        got = label_map_results(labels, (40, 52), samples)
        for i, sample in enumerate(got):
            expected = labels[i, 0]
            if padding:
                expected = _nearest_centres(expected, (40, 52))[:40 - padding[0], :52 - padding[1]]
            expected = _nearest_centres(expected, meta['ori_shape'])
            assert sample.pred_sem_seg.data.dtype == torch.int64
            assert torch.equal(sample.pred_sem_seg.data[0], expected), meta
    # flipped: flipped back after the crop, before the resize, as mmseg (nearest-centre ties
    # fall differently in the other order: 10 -> 75 rows, 34 -> 51 rows, 40 -> 60 columns)
    for meta, padding in [(dict(ori_shape=(75, 101), flip=True, flip_direction='vertical'),
                           None),
                          (dict(ori_shape=(51, 60), flip=True, flip_direction='horizontal',
                                img_padding_size=[0, 12, 0, 6]), (6, 12))]:
        got = label_map_results(labels, (40, 52), [SegDataSample(metainfo=dict(meta))])
        expected = labels[0, 0]
        if padding:
            expected = _nearest_centres(expected, (40, 52))[:40 - padding[0], :52 - padding[1]]
        expected = expected.flip(1 if meta['flip_direction'] == 'horizontal' else 0)
        assert torch.equal(got[0].pred_sem_seg.data[0],
                           _nearest_centres(expected, meta['ori_shape'])), meta
    assert torch.equal(label_map_results(labels, (40, 52), None)[1].pred_sem_seg.data[0],
                       labels[1, 0].repeat_interleave(4, 0).repeat_interleave(4, 1))
    # against mmseg itself: one-hot logits at the head's resolution, resized bilinearly to the
    # input (as the float32 graph does) and post-processed by mmseg, flipped images included
    import types

    from mmseg.models.segmentors import BaseSegmentor
    segmentor = types.SimpleNamespace(align_corners=False)
    segmentor.postprocess_result = types.MethodType(BaseSegmentor.postprocess_result, segmentor)
    logits = torch.nn.functional.one_hot(labels[:, 0], 150).permute(0, 3, 1, 2).float()
    graph = torch.nn.functional.interpolate(logits, size=(40, 52), mode='bilinear',
                                            align_corners=False)
    for meta in (dict(ori_shape=(40, 52)), dict(ori_shape=(40, 52), flip=True,
                                                 flip_direction='horizontal'),
                 dict(ori_shape=(40, 52), flip=True, flip_direction='vertical')):
        expected = segmentor.postprocess_result(
            graph, [SegDataSample(metainfo=dict(meta)) for _ in range(2)])
        got = label_map_results(labels, (40, 52),
                                [SegDataSample(metainfo=dict(meta)) for _ in range(2)])
        for want, have in zip(expected, got):
            assert torch.equal(want.pred_sem_seg.data, have.pred_sem_seg.data), meta
