"""``tools/deployment/test.py``: a deployed model on the model config's test set, with its FPS.

The command line of mmdeploy's ``tools/test.py``::

    python tools/deployment/test.py DEPLOY_CFG MODEL_CFG --model FILE [FILE ...] \\
        [--checkpoint CKPT] [--batch-size N] [--speed-test] [--work-dir DIR] [--cfg-options ...]

Runs the backend files (``end2end.onnx`` or ``end2end.xml``, as ``deploy.py`` wrote them)
over the test dataloader with the config's evaluator, times ``test_step`` as
``tools/test.py`` does and prints the metric and the FPS on one line. With
``--checkpoint`` the fused PyTorch model is evaluated too, with the model config's own
test pipeline (the model as trained), and both lines and their difference are printed. A
static deploy config resizes the backend's images to its input size: when that is not the
model's test scale, a note says so before the run. The precision is read from the model
file and must be the deploy config's. Everything runs on the CPU.
"""
import argparse
import copy
import json
import numbers
import os
import os.path as osp
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.registry import DATASETS, DefaultScope
from mmengine.runner import Runner

from ..config import framework_of, load_config
from ..engine import EvalSpeedHook, summary_line
from ..errors import DatasetMissingError, DeployError, exits_on_user_errors
from ..inference import build_inference_model
from ..runtime import check_dataset, iter_datasets, spread_indices
from .backends import batch_limit, build_backend_model, check_model_precision, quiet
from .deploy_config import (backend_of, check_task, input_shape_of, precision_of,
                            read_deploy_config)

# the metrics a deployment is checked on, in points (mAP x 100; mIoU as mmseg gives it)
MAIN_METRICS = {'mmdet': ('coco/bbox_mAP', 'coco/segm_mAP', 'pascal_voc/mAP'),
                'mmseg': ('mIoU',)}
SCALE_DOCS = 'docs/deployment.md, "A static config at your model\'s scale"'
DEFAULT_METRIC_IMAGES = 500  # deploy.py's metric check: at most this many test images


def main_metrics(metrics: Dict[str, float], framework: str) -> Dict[str, float]:
    """Every checked metric of a result (Mask R-CNN: bbox and segm mAP), in points."""
    found = {key: float(metrics[key]) * (100.0 if framework == 'mmdet' else 1.0)
             for key in MAIN_METRICS[framework] if key in metrics}
    if not found:
        raise DeployError(f'No {" or ".join(MAIN_METRICS[framework])} among the metrics '
                          f'{sorted(metrics)}: the evaluator of the model config gives none.')
    return found


def with_nothing_detected(evaluator, metrics: Dict[str, float]) -> Dict[str, float]:
    """``metrics`` with 0 for the mAPs that mmdet's CocoMetric leaves out when nothing was
    detected on any image (it logs that the results are empty and gives no metric of its
    own): a detector that finds nothing scores 0 points. A CocoMetric that gave any metric,
    only formats results, or was asked for other items is left as it is."""
    if 'mmdet' not in sys.modules:
        return metrics
    from mmdet.evaluation import CocoMetric
    zeros = {}
    for metric in evaluator.metrics:
        if (type(metric).compute_metrics is CocoMetric.compute_metrics  # not LVIS's
                and not metric.format_only
                and (metric.metric_items is None or 'mAP' in metric.metric_items)
                and not any(key.startswith(f'{metric.prefix}/') for key in metrics)):
            zeros.update({f'{metric.prefix}/{kind}_mAP': 0.0 for kind in metric.metrics
                          if kind in ('bbox', 'segm')})
    return {**zeros, **metrics}


def _test_pipelines(cfg: Config) -> List[list]:
    """The test pipelines of ``cfg``: each test dataset's (Repeat, Concat & co unwrapped) and
    ``test_pipeline``."""
    pipelines = [dataset.pipeline for loader, dataset in iter_datasets(cfg)
                 if loader == 'test_dataloader' and dataset.get('pipeline')]
    if 'test_pipeline' in cfg:
        pipelines.append(cfg.test_pipeline)
    return pipelines


def test_scale(model_cfg: Config) -> Optional[Tuple[Tuple[int, int], bool]]:
    """``((width, height), keep_ratio)`` of the model's test ``Resize``; None without one."""
    for pipeline in _test_pipelines(model_cfg):
        for step in pipeline:
            if step.get('type', '').split('.')[-1] == 'Resize' and step.get('scale'):
                scale = step['scale']
                scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
                return scale, bool(step.get('keep_ratio', False))
    return None


def static_scale_note(model_cfg: Config, deploy_cfg: Config) -> Optional[str]:
    """What a static config's input costs when it is not the model's test scale (both scales
    and what to use instead); None for a dynamic config or one at that scale (up to the
    padding to a multiple of 32)."""
    shape = input_shape_of(deploy_cfg)
    if shape is None:
        return None
    width, height = shape
    found = test_scale(model_cfg)
    if found is not None:
        (scale_w, scale_h), keep_ratio = found
        sides, scale_sides = sorted((width, height)), sorted((scale_w, scale_h))
        if not keep_ratio:
            sides, scale_sides = (width, height), (scale_w, scale_h)
        if all(0 <= side - scale < 32 for side, scale in zip(sides, scale_sides)):
            return None
        model_scale = f'{scale_w}x{scale_h} (Resize, keep_ratio={keep_ratio})'
    else:
        model_scale = "each image's own size (no Resize in its test pipeline)"
    return (f'the static deploy config resizes every image to {width}x{height} (WxH), but the '
            f'model is tested at {model_scale}: the backend sees a scale the model was not '
            'tested at. PyTorch is evaluated at its own scale, so the drop includes what '
            'this costs. Use a dynamic config (configs/deploy/*_dynamic.py) or a static '
            f'config at the model\'s scale ({SCALE_DOCS}).')


def reference_config(model_cfg: Config) -> Config:
    """The model config as ``tools/test.py`` runs it (in this process: no workers)."""
    cfg = copy.deepcopy(model_cfg)
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    return cfg


def evaluation_config(model_cfg: Config, deploy_cfg: Config) -> Config:
    """The model config whose test pipeline feeds the backend what it was exported for: a
    static config resizes every image to its input size, as mmdeploy's ``create_input``."""
    cfg = reference_config(model_cfg)
    shape = input_shape_of(deploy_cfg)
    if shape is not None:
        for pipeline in _test_pipelines(cfg):
            for step in pipeline:
                if step.get('type', '').split('.')[-1] == 'Resize':
                    step.update(scale=tuple(shape), keep_ratio=False)
    return cfg


@dataclass
class TestImages:
    """The images of a test split that a metric is computed on: all of them (``indices`` is
    None) or ``indices``, spread evenly, with their ``img_ids``."""
    total: int
    indices: Optional[List[int]] = None
    img_ids: Optional[list] = None

    @property
    def count(self) -> int:
        return self.total if self.indices is None else len(self.indices)

    def describe(self) -> str:
        if self.indices is None:
            return f'all {self.total} test images'
        return f'{self.count} of {self.total} test images, spread evenly'


def build_test_dataset(cfg: Config):
    """The test dataset of ``cfg`` as its dataloader builds it."""
    with DefaultScope.overwrite_default_scope(framework_of(cfg)):
        return DATASETS.build(copy.deepcopy(cfg.test_dataloader.dataset))


def sample_test_images(cfg: Config, metric_images: Optional[int]) -> TestImages:
    """At most ``metric_images`` images of the test split, spread evenly over it (None or 0:
    all). A test dataset that already keeps some ``indices`` is sampled among those; a wrapped
    one (ConcatDataset & co) is evaluated whole."""
    if metric_images is not None and metric_images < 0:
        raise DeployError(f'--metric-images {metric_images}: give a number of test images '
                          '(0: all of them).')
    dataset_cfg = cfg.test_dataloader.dataset
    dataset = build_test_dataset(cfg)
    total = len(dataset)
    if not metric_images or metric_images >= total:
        return TestImages(total)
    if 'dataset' in dataset_cfg or 'datasets' in dataset_cfg:
        raise DeployError(f'--metric-images {metric_images}: the test dataset is a '
                          f'{dataset_cfg.get("type")} of {total} images, which cannot be '
                          'sampled; use --metric-images 0 to evaluate all of them.')
    positions = spread_indices(total, metric_images)
    kept = dataset_cfg.get('indices')  # the dataset's own subset: positions index into it
    if kept is None:
        indices = positions
    else:
        if isinstance(kept, int) and kept >= 0:  # mmengine: the first kept images
            kept = range(kept)
        elif isinstance(kept, int):  # the last -kept images (all, if there are fewer)
            whole = copy.deepcopy(cfg)
            whole.test_dataloader.dataset.indices = None
            length = len(build_test_dataset(whole))
            kept = range(max(0, length + kept), length)
        kept = list(kept)
        indices = [kept[i] for i in positions]
    return TestImages(total, indices, [dataset.get_data_info(i).get('img_id') for i in positions])


def only_these_images(evaluator, img_ids: Optional[Sequence]) -> None:
    """Make the metrics of ``evaluator`` that read the whole annotation file (mmdet's
    CocoMetric: every image of it, detected or not) score only ``img_ids``."""
    if img_ids is None:
        return
    for metric in evaluator.metrics:
        if getattr(metric, '_coco_api', None) is not None:
            metric.img_ids = list(img_ids)


class OnlyTheseImagesHook(Hook):
    """:func:`only_these_images` on the test evaluator, once the runner has built it."""

    def __init__(self, img_ids: Sequence) -> None:
        self.img_ids = list(img_ids)

    def before_test(self, runner) -> None:
        only_these_images(runner.test_loop.evaluator, self.img_ids)


class ImageEvaluator:
    """The test evaluator of ``cfg`` on chosen images of its test split, run in this process
    for whichever model it is given (NNCF's accuracy control validates many variants of one
    graph): the main metrics over the images, and each image's own."""

    def __init__(self, cfg: Config) -> None:
        from mmengine.evaluator import Evaluator
        self.framework = framework_of(cfg)
        self.dataset = build_test_dataset(cfg)
        with DefaultScope.overwrite_default_scope(self.framework):
            self.evaluator = Evaluator(copy.deepcopy(cfg.test_evaluator))
        self.evaluator.dataset_meta = self.dataset.metainfo

    def __len__(self) -> int:
        return len(self.dataset)

    def _metrics(self, batches: List[Tuple[dict, list]]) -> Dict[str, float]:
        """The main metrics (points) of the predictions ``batches`` hold, total: a metric
        left out because nothing was detected, or given as undefined (-1), counts 0."""
        only_these_images(self.evaluator,
                          [sample.metainfo.get('img_id') for _, outputs in batches
                           for sample in outputs])
        for batch, outputs in batches:
            self.evaluator.process(data_samples=outputs, data_batch=batch)
        metrics = self.evaluator.evaluate(len(batches))
        points = main_metrics(with_nothing_detected(
            self.evaluator, {k: v for k, v in metrics.items() if isinstance(v, numbers.Real)}),
            self.framework)
        # COCO's -1 (an image with nothing to find) also counts 0, detections there or not
        return {key: max(value, 0.0) for key, value in points.items()}

    def __call__(self, model: torch.nn.Module, indices: Sequence[int], each: bool = False
                 ) -> Tuple[Dict[str, float], Optional[List[Dict[str, float]]]]:
        """``(metrics, each image's metrics or None)``: the main metrics (points) of ``model``
        over the images at ``indices``."""
        from mmengine.dataset import pseudo_collate
        batches = []
        with torch.no_grad():
            for index in indices:
                batch = pseudo_collate([self.dataset[int(index)]])
                batches.append((batch, model.test_step(batch)))
        return (self._metrics(batches),
                [self._metrics([item]) for item in batches] if each else None)


class CPURunner(Runner):
    """mmengine's Runner keeping the model on the CPU (it moves it to a GPU whenever torch
    sees one; our backends and their timing run on the CPU)."""

    def wrap_model(self, model_wrapper_cfg, model):
        return model


def run_test(model: torch.nn.Module, cfg: Config, work_dir: str,
             images: Optional[TestImages] = None) -> Tuple[dict, dict]:
    """``(metrics, speed)`` of ``model`` (fused, or exported from the fused model) over
    ``cfg``'s test set (or those of its ``images``) on the CPU, timed as ``tools/test.py``."""
    if images is not None and images.indices is not None:
        cfg = copy.deepcopy(cfg)
        cfg.test_dataloader.dataset.indices = list(images.indices)
    hooks = copy.deepcopy(cfg.get('default_hooks') or {})
    hooks.pop('checkpoint', None)
    runner = CPURunner(model=model, work_dir=work_dir, test_dataloader=cfg.test_dataloader,
                       test_cfg=cfg.get('test_cfg') or dict(type='TestLoop'),
                       test_evaluator=cfg.test_evaluator, default_hooks=hooks,
                       env_cfg=cfg.get('env_cfg') or {}, default_scope=cfg.default_scope,
                       log_processor=cfg.get('log_processor'), cfg=cfg)
    speed_hook = EvalSpeedHook()
    runner.register_hook(speed_hook)
    if images is not None and images.indices is not None:
        runner.register_hook(OnlyTheseImagesHook(images.img_ids))
    metrics = runner.test()
    metrics = with_nothing_detected(runner.test_loop.evaluator, metrics)
    speed = dict(speed_hook.speed, fused=True)
    return {k: float(v) for k, v in metrics.items() if isinstance(v, numbers.Real)}, speed


def evaluate_backend(deploy_cfg: Config, model_cfg_path: str, files: List[str],
                     work_dir: str, cfg_options: Optional[dict] = None,
                     checkpoint: Optional[str] = None, threads: Optional[int] = None,
                     verbose: bool = False, batch_size: int = 1,
                     metric_images: Optional[int] = None) -> dict:
    """Metrics and speed of the backend files on the test set (with the deploy config's input)
    and of the PyTorch checkpoint (with the model config's own test pipeline); on at most
    ``metric_images`` of its images, spread evenly (None or 0: all)."""
    model_cfg = load_config(model_cfg_path, cfg_options, pretrained=False)
    framework = framework_of(model_cfg)
    check_task(deploy_cfg, model_cfg, model_cfg_path)
    check_dataset(model_cfg, splits=('test',))
    for path in files:
        if not osp.isfile(path):
            raise DeployError(f'Backend file {path} not found; deploy.py writes it to its '
                              '--work-dir (end2end.onnx, end2end.xml).')
    limit = batch_limit(deploy_cfg)
    if limit and batch_size != 1:
        raise DeployError(f'--batch-size {batch_size}, but {limit}: use --batch-size 1 or a '
                          'dynamic deploy config (configs/deploy/*_dynamic.py).')
    check_model_precision(files[0], deploy_cfg)  # the file runs at the config's precision
    note = static_scale_note(model_cfg, deploy_cfg)
    if note:
        print(f'[evit_mm test] note: {note}', flush=True)
    cfgs = dict(backend=evaluation_config(model_cfg, deploy_cfg),
                pytorch=reference_config(model_cfg))
    for cfg in cfgs.values():
        cfg.test_dataloader.batch_size = batch_size
    os.makedirs(work_dir, exist_ok=True)
    with quiet(osp.join(work_dir, 'test.log'), verbose):
        images = sample_test_images(cfgs['backend'], metric_images)
    record = dict(deploy_config=getattr(deploy_cfg, 'filename', None), model=files,
                  framework=framework, model_config=model_cfg_path, checkpoint=checkpoint,
                  backend=backend_of(deploy_cfg), precision=precision_of(deploy_cfg),
                  batch_size=batch_size, images=images.describe(), scale_note=note)
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
            record['metrics'], record['speed'] = run_test(
                backend_model, cfgs['backend'], osp.join(work_dir, 'backend'), images)
            if checkpoint:
                record['pytorch'] = dict(zip(('metrics', 'speed'), run_test(
                    torch_model, cfgs['pytorch'], osp.join(work_dir, 'pytorch'), images)))
        finally:
            torch.set_num_threads(previous)
    record['main_metrics'] = {key: dict(points=points) for key, points in
                              main_metrics(record['metrics'], framework).items()}
    if checkpoint:
        for key, reference in main_metrics(record['pytorch']['metrics'], framework).items():
            main = record['main_metrics'][key]
            main.update(pytorch_points=reference, drop_points=reference - main['points'])
    record['speed']['runtime'] = f"{record['backend']} {record['precision']}"
    with open(osp.join(work_dir, 'test_metrics.json'), 'w') as f:
        json.dump(record, f, indent=2)
    return record


def result_lines(record: dict, framework: str) -> List[str]:
    lines = [summary_line('test', record['metrics'], framework, record['speed'], False)]
    if 'pytorch' in record:
        speed = dict(record['pytorch']['speed'], runtime="pytorch f32, the model's own scale")
        lines.insert(0, summary_line('test', record['pytorch']['metrics'], framework, speed,
                                     False))
        for key, main in record['main_metrics'].items():
            lines.append(f"[evit_mm test] {key}: {record['backend']} {record['precision']} "
                         f"{main['points']:.2f} vs PyTorch {main['pytorch_points']:.2f} points "
                         f"(drop {main['drop_points']:+.2f}); FPS "
                         f"{record['speed']['fps'] or 0:.2f} vs "
                         f"{record['pytorch']['speed']['fps'] or 0:.2f}")
    if not record['images'].startswith('all'):
        lines.append(f"[evit_mm test] metrics on {record['images']} (--metric-images)")
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
    parser.add_argument('--batch-size', type=int, default=1,
                        help='images per batch (dynamic deploy configs; static ones take 1)')
    parser.add_argument('--metric-images', type=int, default=0, metavar='N',
                        help='evaluate at most N test images, spread evenly over the test set '
                             '(default 0: all of them)')
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
                                  args.cfg_options, args.checkpoint, args.threads, args.verbose,
                                  args.batch_size, args.metric_images)
    except DatasetMissingError as err:
        raise DatasetMissingError(f'{err} (the deployed model is evaluated on the model '
                                  "config's test set)") from err
    print('\n'.join(result_lines(record, record['framework'])))
    return record
