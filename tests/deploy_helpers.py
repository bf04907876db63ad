"""What the deployment tests build: images, seeded checkpoints, small deploy and model configs,
and one deployment per deploy config, shared by the tests that read it (see conftest.py)."""
import json
from dataclasses import dataclass
from pathlib import Path

import mmcv
import numpy as np
import onnx
import pytest
import torch
from mmengine.structures import InstanceData

from evit_mm.config import build_model, load_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / 'configs' / 'deploy'
RETINANET = str(REPO / 'configs/detection/retinanet_evit_m4.py')
MASK_RCNN = str(REPO / 'configs/detection/mask_rcnn_evit_m4.py')
FPN = str(REPO / 'configs/segmentation/fpn_evit_m4_ade20k.py')
STANDARD_DOMAINS = {'', 'ai.onnx'}
ODD_SCALE = (330, 250)  # resized sides that are not multiples of 32: the input gets padded
# the detection deploy configs that tests share one export of (RetinaNet; Mask R-CNN)
SHARED_DETECTION = ['detection_onnxruntime_dynamic.py', 'detection_openvino_dynamic.py',
                    'detection_onnxruntime_static-800x1344.py',
                    'detection_openvino_static-800x1344.py',
                    'instance-seg_onnxruntime_dynamic.py']


def make_image(path: Path, height: int, width: int, seed: int) -> str:
    rng = np.random.RandomState(seed)
    img = np.full((height, width, 3), 90, np.uint8)
    for _ in range(6):
        y, x = rng.randint(0, height - 40), rng.randint(0, width - 40)
        img[y:y + rng.randint(20, 60), x:x + rng.randint(20, 80)] = rng.randint(0, 255, 3)
    mmcv.imwrite(img, str(path))
    return str(path)


TWO_CLASSES = (0, 1)  # Mask R-CNN: every RoI scores both confidently, each with its own box


def make_checkpoint(config: str, path: Path) -> str:
    """Seeded weights with a classifier bias raised so that the test images get confident
    detections (random weights alone give none above the 0.3 threshold). Mask R-CNN: two
    classes (:data:`TWO_CLASSES`) score about 0.45 on every RoI, the first a little more."""
    torch.manual_seed(0)  # PyTorch's default init: well spread scores, unlike the heads' own
    model = build_model(load_config(config, pretrained=False))
    with torch.no_grad():
        if hasattr(model, 'roi_head'):
            fc_cls = model.roi_head.bbox_head.fc_cls
            fc_cls.bias[list(TWO_CLASSES)] = torch.tensor([6.1, 6.0])
            fc_cls.weight[list(TWO_CLASSES)] *= 10  # scores that differ by RoI: no near-ties
        elif hasattr(model, 'bbox_head'):
            model.bbox_head.retina_cls.bias.fill_(-0.5)
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


def large_boxes(config: str, path: Path) -> str:
    """:func:`make_checkpoint` with boxes that grow past the image (regression bias e^1 on width
    and height), so that many are clipped at its borders. Mask R-CNN: the first of
    :data:`TWO_CLASSES` regresses boxes that cover the image, the second boxes smaller than
    the proposal, so that most confident detections are of the class each RoI scores second
    (mmdeploy's RoI head would give them the first class's box)."""
    make_checkpoint(config, path)
    checkpoint = torch.load(path)
    state = checkpoint['state_dict']
    key = ('roi_head.bbox_head.fc_reg.bias' if 'roi_head.bbox_head.fc_reg.bias' in state
           else 'bbox_head.retina_reg.bias')
    deltas = state[key].view(-1, 4)
    deltas[:, 2:] = 1.0
    if key.startswith('roi_head'):  # the first class's boxes cover the image: NMS keeps few
        deltas[TWO_CLASSES[0], 2:] = 10.0  # x std 0.2: e^2 times the proposal
        deltas[TWO_CLASSES[1]] = torch.tensor([1.0, -1.0, -3.0, -2.0])
    torch.save(checkpoint, path)
    return str(path)


def small_deploy_config(tmp_path: Path, base: str, width: int, height: int) -> str:
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


def _detection_test_pipeline(scale, masks: bool = False) -> str:
    """Config text: ``test_pipeline``, resizing to ``scale`` with the ratio kept."""
    return ("test_pipeline = [dict(type='LoadImageFromFile'),\n"
            f"    dict(type='Resize', scale={tuple(scale)}, keep_ratio=True),\n"
            f"    dict(type='LoadAnnotations', with_bbox=True, with_mask={masks}),\n"
            "    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',\n"
            "                                          'img_shape', 'scale_factor'))]\n")


def odd_scale_config(tmp_path: Path, base: str, masks: bool = False) -> str:
    """The model config with a test resize whose results are not multiples of 32."""
    path = tmp_path / f'odd_{Path(base).name}'
    path.write_text(f"_base_ = '{base}'\n" + _detection_test_pipeline(ODD_SCALE, masks)
                    + "test_dataloader = dict(dataset=dict(pipeline=test_pipeline))\n")
    return str(path)


def demo_config(tmp_path: Path, base: str, data_root: Path, scale) -> Path:
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
                + _detection_test_pipeline(scale, masks='mask_rcnn' in base) +
                # Mask R-CNN: 300 proposals, not 1000 (the same code path, a third of the time)
                ("model = dict(test_cfg=dict(rpn=dict(max_per_img=300)))\n"
                 if 'mask_rcnn' in base else '') +
                "test_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline,"
                " ann_file='annotations/instances_val2017.json'))\n"
                "val_dataloader = test_dataloader\n"
                "test_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')\n"
                "val_evaluator = test_evaluator\n")
    path.write_text(text)
    return path


def instances(boxes, scores, labels, masks=None) -> InstanceData:
    data = InstanceData(bboxes=torch.tensor(boxes, dtype=torch.float32),
                        scores=torch.tensor(scores), labels=torch.tensor(labels))
    if masks is not None:
        data.masks = masks
    return data


def rewrite_records() -> dict:
    """mmdeploy's rewrite registry entries for the functions our export rewrites."""
    import mmdeploy.codebase.mmdet.models  # noqa: F401  (mmdeploy's own rewrites registered)
    from mmdeploy.core import FUNCTION_REWRITER

    from evit_mm.deployment.rewrites import REWRITTEN
    records = FUNCTION_REWRITER._registry._rewrite_records
    return {name: list(records.get(name, [])) for name in REWRITTEN}


@dataclass
class Deployed:
    """One run of ``tools/deployment/deploy.py``: its record, the deployment it built (the
    fused PyTorch model and the backend model, as :func:`deploy.export_and_load` returned
    them), its inputs and mmdeploy's rewrite registry as it was before the export."""
    record: dict
    pair: object
    model_cfg: str
    checkpoint: str
    deploy_cfg: str
    work_dir: Path
    rewrites_before: dict


def run_deploy(work_dir: Path, deploy_cfg: str, model_cfg: str, checkpoint: str, image: str,
               *extra: str) -> Deployed:
    """``deploy.main`` as the command line runs it, keeping the deployment it built; checks
    what every record must hold, and that torch is left unpatched."""
    from evit_mm.deployment import deploy as deploy_module
    export_and_load, built = deploy_module.export_and_load, []

    def keep(*args, **kwargs):
        built.append(export_and_load(*args, **kwargs))
        return built[-1]
    before, export = rewrite_records(), torch.onnx.export
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deploy_module, 'export_and_load', keep)
        record = deploy_module.main([deploy_cfg, model_cfg, checkpoint, image, '--work-dir',
                                     str(work_dir), '--iters', '1', *extra])
    # nothing stays patched once the tool has exported
    from torch.onnx import symbolic_opset9
    assert torch.onnx.export is export and not hasattr(symbolic_opset9, '_cast_Long')
    assert json.loads((work_dir / 'deploy_record.json').read_text()) == record
    onnx_model = onnx.load(record['files']['onnx'])
    assert {node.domain for node in onnx_model.graph.node} <= STANDARD_DOMAINS
    for backend in ('pytorch', record['backend']):
        assert record['speed'][backend]['fps'] > 0
    assert record['fused'] is True and record['threads'] == torch.get_num_threads()
    return Deployed(record, built[0], model_cfg, checkpoint, deploy_cfg, work_dir, before)


def assert_parity(record: dict, min_compared: int) -> None:
    for path, parity in record['parity'].items():
        assert parity['ok'] and not parity['failures'], (path, parity)
        assert parity['compared'] >= min_compared, (path, parity)
