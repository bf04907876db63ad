"""``tools/deployment/test.py``: a deployed model on the model config's test set, with its FPS.

The command line of mmdeploy's ``tools/test.py``::

    python tools/deployment/test.py DEPLOY_CFG MODEL_CFG --model FILE [FILE ...] \\
        [--checkpoint CKPT] [--speed-test] [--work-dir DIR] [--cfg-options ...]

Runs the backend files (``end2end.onnx`` or ``end2end.xml``, as ``deploy.py`` wrote them)
over the test dataloader with the config's evaluator, times ``test_step`` as
``tools/test.py`` does and prints the metric and the FPS on one line. With
``--checkpoint`` the fused PyTorch model is evaluated on the same data and both lines
and their difference are printed.
"""
import argparse
import copy
import json
import numbers
import os
import os.path as osp
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction

from ..config import framework_of, load_config
from ..engine import EvalSpeedHook, summary_line
from ..errors import DatasetMissingError, DeployError, exits_on_user_errors
from ..inference import build_inference_model
from ..runtime import check_dataset, iter_datasets
from .backends import build_backend_model, quiet
from .deploy_config import (backend_of, check_task, input_shape_of, precision_of,
                            read_deploy_config)

MAIN_METRIC = {'mmdet': ('coco/bbox_mAP', 'pascal_voc/mAP'), 'mmseg': ('mIoU',)}


def main_metric(metrics: Dict[str, float], framework: str) -> Tuple[str, float]:
    """The headline metric of a result, in points (mAP x 100, mIoU as mmseg gives it)."""
    for key in MAIN_METRIC[framework]:
        if key in metrics:
            return key, float(metrics[key]) * (100.0 if framework == 'mmdet' else 1.0)
    raise DeployError(f'No {" or ".join(MAIN_METRIC[framework])} among the metrics '
                      f'{sorted(metrics)}: the evaluator of the model config gives none.')


def evaluation_config(model_cfg: Config, deploy_cfg: Config) -> Config:
    """The model config whose test pipeline feeds the backend what it was exported for: a
    static config resizes every image to its input size, as mmdeploy's ``create_input``."""
    cfg = copy.deepcopy(model_cfg)
    shape = input_shape_of(deploy_cfg)
    if shape is not None:
        pipelines = [dict(iter_datasets(cfg))['test_dataloader'].pipeline]  # Repeat & co unwrapped
        if 'test_pipeline' in cfg:
            pipelines.append(cfg.test_pipeline)
        for pipeline in pipelines:
            for step in pipeline:
                if step.get('type') == 'Resize':
                    step.update(scale=tuple(shape), keep_ratio=False)
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    return cfg


def run_test(model: torch.nn.Module, cfg: Config, work_dir: str) -> Tuple[dict, dict]:
    """``(metrics, speed)`` of ``model`` (fused, or exported from the fused model) over
    ``cfg``'s test set, timed as ``tools/test.py``."""
    from mmengine.runner import Runner
    hooks = copy.deepcopy(cfg.get('default_hooks') or {})
    hooks.pop('checkpoint', None)
    runner = Runner(model=model, work_dir=work_dir, test_dataloader=cfg.test_dataloader,
                    test_cfg=cfg.get('test_cfg') or dict(type='TestLoop'),
                    test_evaluator=cfg.test_evaluator, default_hooks=hooks,
                    env_cfg=cfg.get('env_cfg') or {}, default_scope=cfg.default_scope,
                    log_processor=cfg.get('log_processor'), cfg=cfg)
    speed_hook = EvalSpeedHook()
    runner.register_hook(speed_hook)
    metrics = runner.test()
    speed = dict(speed_hook.speed, fused=True)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}, speed


def evaluate_backend(deploy_cfg: Config, model_cfg_path: str, files: List[str],
                     work_dir: str, cfg_options: Optional[dict] = None,
                     checkpoint: Optional[str] = None, threads: Optional[int] = None,
                     verbose: bool = False) -> dict:
    """Metric and speed of the backend files (and of the PyTorch checkpoint) on the test set."""
    model_cfg = load_config(model_cfg_path, cfg_options, pretrained=False)
    framework = framework_of(model_cfg)
    check_task(deploy_cfg, model_cfg, model_cfg_path)
    check_dataset(model_cfg, splits=('test',))
    for path in files:
        if not osp.isfile(path):
            raise DeployError(f'Backend file {path} not found; deploy.py writes it to its '
                              '--work-dir (end2end.onnx, end2end.xml).')
    cfg = evaluation_config(model_cfg, deploy_cfg)
    os.makedirs(work_dir, exist_ok=True)
    record = dict(deploy_config=getattr(deploy_cfg, 'filename', None), model=files,
                  framework=framework,
                  model_config=model_cfg_path, checkpoint=checkpoint,
                  backend=backend_of(deploy_cfg), precision=precision_of(deploy_cfg))
    with quiet(osp.join(work_dir, 'test.log'), verbose):
        previous = torch.get_num_threads()
        try:
            if threads:
                torch.set_num_threads(threads)
            torch_model = None
            if checkpoint or framework == 'mmseg':  # mmseg's post-processing needs the segmentor
                torch_model = build_inference_model(model_cfg_path, checkpoint, fuse=True,
                                                    cfg_options=cfg_options)[0]
            backend_model = build_backend_model(model_cfg, deploy_cfg, files,
                                                torch.get_num_threads(), torch_model)
            record['metrics'], record['speed'] = run_test(backend_model, cfg,
                                                          osp.join(work_dir, 'backend'))
            if checkpoint:
                record['pytorch'] = dict(zip(('metrics', 'speed'), run_test(
                    torch_model, cfg, osp.join(work_dir, 'pytorch'))))
        finally:
            torch.set_num_threads(previous)
    key, value = main_metric(record['metrics'], framework)
    record['main_metric'] = dict(name=key, points=value)
    if checkpoint:
        _, reference = main_metric(record['pytorch']['metrics'], framework)
        record['main_metric'].update(pytorch_points=reference, drop_points=reference - value)
    record['speed']['runtime'] = f"{record['backend']} {record['precision']}"
    with open(osp.join(work_dir, 'test_metrics.json'), 'w') as f:
        json.dump(record, f, indent=2)
    return record


def result_lines(record: dict, framework: str) -> List[str]:
    lines = [summary_line('test', record['metrics'], framework, record['speed'], False)]
    if 'pytorch' in record:
        speed = dict(record['pytorch']['speed'], runtime='pytorch f32')
        lines.insert(0, summary_line('test', record['pytorch']['metrics'], framework, speed,
                                     False))
        main = record['main_metric']
        lines.append(f"[evit_mm test] {main['name']}: {record['backend']} "
                     f"{record['precision']} {main['points']:.2f} vs PyTorch "
                     f"{main['pytorch_points']:.2f} points (drop {main['drop_points']:+.2f}); "
                     f"FPS {record['speed']['fps'] or 0:.2f} vs "
                     f"{record['pytorch']['speed']['fps'] or 0:.2f}")
    return lines


@exits_on_user_errors('test')
def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description='Evaluate a deployed (backend) model on the '
                                                 "model config's test set")
    parser.add_argument('deploy_cfg', help='the deploy config the files were exported with')
    parser.add_argument('model_cfg', help='model config (for a --demo or custom-data run: the '
                                          'copy in its work dir)')
    parser.add_argument('--model', nargs='+', required=True,
                        help='backend files: end2end.onnx (ONNX Runtime) or end2end.xml '
                             '(OpenVINO)')
    parser.add_argument('--checkpoint', help='also evaluate this PyTorch checkpoint (fused) on '
                                             'the same data and print the difference')
    parser.add_argument('--speed-test', action='store_true',
                        help='accepted for mmdeploy compatibility: the FPS is always measured')
    parser.add_argument('--work-dir', default='work_dirs/deploy_test',
                        help='where test_metrics.json and the log go')
    parser.add_argument('--threads', type=int, help='CPU threads for PyTorch and the backend')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override model config entries, e.g. test_dataloader.dataset.'
                             'data_root=PATH')
    parser.add_argument('--verbose', action='store_true',
                        help="show mmengine's and the backends' log instead of writing it to "
                             'WORK_DIR/test.log')
    args = parser.parse_args(argv)
    deploy_cfg = read_deploy_config(args.deploy_cfg)
    try:
        record = evaluate_backend(deploy_cfg, args.model_cfg, args.model, args.work_dir,
                                  args.cfg_options, args.checkpoint, args.threads, args.verbose)
    except DatasetMissingError as err:
        raise DatasetMissingError(f'{err} (the deployed model is evaluated on the model '
                                  "config's test set)") from err
    print('\n'.join(result_lines(record, record['framework'])))
    return record
