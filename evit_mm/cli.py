"""``tools/train.py``, ``tools/test.py`` and ``tools/image_demo.py``: mmdet / mmseg command lines.

The framework comes from the config (``default_scope``). The scripts in
``tools/`` import :mod:`evit_mm.compat` first, so ``--resume`` and ``load_from``
work on torch >= 2.6 while downloads still cannot run code.
"""
import argparse
import json
import numbers
import os
import os.path as osp
from typing import List, Optional

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from .config import framework_of, init_cpu_distributed, load_config
from .data_checks import add_box_filter, check_ignore_index, find_empty_dataset
from .engine import EvalSpeedHook, summary_line
from .errors import exits_on_user_errors
from .runtime import apply_demo, check_dataset, iter_datasets, set_data_root

DEMO_SEED = 0


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='directory for logs, checkpoints and results')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.backbone.frozen_stages=1')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher for distributed runs')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    parser.add_argument('--data-root', metavar='PATH',
                        help="dataset root for every dataloader (replaces the config's data_root) "
                             'and for the evaluators\' annotation files under the old root')
    parser.add_argument('--demo', action='store_true',
                        help='run on a small generated dataset in the real format (no COCO/ADE20K '
                             'needed), with a CPU-sized scale and schedule')
    parser.add_argument('--demo-iters', type=int, default=None,
                        help='demo schedule length: epochs (detection) or iterations '
                             '(segmentation)')
    parser.add_argument('--demo-images', type=int, default=None,
                        help='number of generated training images (validation: a quarter)')


def _load_config(args: argparse.Namespace) -> tuple:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    # options before the demo settings (a local checkpoint) and after them (they win)
    cfg = load_config(args.config, args.cfg_options, args.launcher)
    framework = framework_of(cfg)
    name = osp.splitext(osp.basename(args.config))[0] + ('_demo' if args.demo else '')
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join('work_dirs', name)
    if args.demo:
        notes = apply_demo(cfg, framework, iterations=args.demo_iters,
                           num_images=args.demo_images)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
    else:
        if args.data_root:
            set_data_root(cfg, args.data_root)
        check_dataset(cfg)
        notes = []
    if framework == 'mmseg':
        check_ignore_index(cfg)
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='evit_mm.LabelRangeHook', framework=framework)]
    return cfg, framework, notes


def _build_runner(cfg: Config):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    init_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if runner.distributed:
        print_log(f'[evit_mm] distributed run: world size {runner.world_size}, '
                  f'rank {runner.rank}', logger='current')
    return runner


@exits_on_user_errors('train')
def train_main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description='Train a detector or segmentor')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the latest checkpoint in the work dir, or from the '
                             'given checkpoint')
    parser.add_argument('--amp', action='store_true', help='mixed-precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by total batch size / base batch size')
    parser.add_argument('--seed', type=int, default=None,
                        help=f'random seed (--demo runs default to {DEMO_SEED})')
    parser.add_argument('--strict-boxes', action='store_true',
                        help='stop on degenerate boxes (zero size, outside the image) instead '
                             'of listing and dropping them')
    _common_args(parser)
    args = parser.parse_args(argv)
    cfg, framework, notes = _load_config(args)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        cfg.auto_scale_lr = dict(cfg.get('auto_scale_lr') or {}, enable=True)
    if args.seed is not None or (args.demo and (cfg.get('randomness') or {}).get('seed') is None):
        cfg.randomness = dict(cfg.get('randomness') or {},
                              seed=DEMO_SEED if args.seed is None else args.seed)
    seed = (cfg.get('randomness') or {}).get('seed')
    if seed is None:
        notes.append('Unseeded run (pass --seed N to make it repeatable).')
    else:
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='evit_mm.ReproducibleResumeHook', seed=seed)]
        notes.append(f'Seed {seed}: random streams follow the schedule position, so a resumed '
                     'run reproduces an uninterrupted one.')
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume:
        cfg.resume, cfg.load_from = True, args.resume
    notes += _guard_training(cfg, framework, args.strict_boxes)
    runner = _build_runner(cfg)
    speed_hook = EvalSpeedHook()
    runner.register_hook(speed_hook)
    for note in notes:
        print_log(f'[evit_mm] {note}', logger='current')
    try:
        runner.train()
    except ValueError as err:  # mmengine cannot serialise an empty dataset
        if 'need at least one array to concatenate' in str(err):
            find_empty_dataset(cfg)
        raise
    metrics = _last_metrics(runner)
    if runner.rank == 0:
        _write_metrics(osp.join(cfg.work_dir, 'val_metrics.json'), args, metrics,
                       speed_hook.speed)
        print(summary_line('train', metrics, framework, speed_hook.speed, args.demo)
              + _checkpoint_note(runner))
    return metrics


def _checkpoint_note(runner) -> str:
    """`` | checkpoint: PATH`` of the checkpoint this run saved last (relative to the current
    folder when it is a local file inside it), for the commands that follow a training."""
    path = runner.message_hub.get_info('last_ckpt')
    if not path:
        return ''
    try:
        relative = osp.relpath(path) if osp.isabs(path) else path
    except ValueError:  # another drive
        relative = path
    return f' | checkpoint: {path if relative.startswith(os.pardir) else relative}'


def _has_pretrained_backbone(cfg: Config) -> bool:
    """Pretrained backbone weights from ``init_cfg`` or ``load_from`` (a resumed run decides as
    the run it resumes did, which had no ``load_from`` of its own)."""
    init_cfg = cfg.model.backbone.get('init_cfg') or {}
    return bool(init_cfg.get('checkpoint') or (cfg.get('load_from') and not cfg.get('resume')))


def _guard_training(cfg: Config, framework: str, strict_boxes: bool) -> List[str]:
    """Data checks and guards for a training run; returns notes to log."""
    cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
        dict(type='evit_mm.DatasetCheckHook', framework=framework, strict_boxes=strict_boxes),
        dict(type='evit_mm.NonFiniteLossHook')]
    notes = []
    if framework == 'mmdet' and not strict_boxes:
        for loader, dataset in iter_datasets(cfg):
            if loader == 'train_dataloader' and add_box_filter(dataset):
                notes.append('Boxes with no area inside the image are dropped from training '
                             '(FilterAnnotations after the resize; --strict-boxes stops instead).')
    backbone = cfg.model.backbone
    if backbone.get('norm_eval') and not _has_pretrained_backbone(cfg):
        backbone['norm_eval'] = False
        notes.append('No pretrained backbone weights: norm_eval switched off, so BatchNorm '
                     'statistics are learned (frozen initial statistics would never change).')
    return notes


def _write_metrics(path: str, args: argparse.Namespace, metrics: dict,
                   speed: Optional[dict] = None) -> None:
    """Record the numeric metrics (and the test's speed) with their config, for
    ``tools/analysis/model_zoo.py``."""
    record = dict(config=args.config, checkpoint=getattr(args, 'checkpoint', None),
                  demo=args.demo, metrics={k: float(v) for k, v in metrics.items()
                                           if isinstance(v, numbers.Real)})
    if speed is not None:
        record['speed'] = speed
    with open(path, 'w') as f:
        json.dump(record, f, indent=2)


def _last_metrics(runner) -> dict:
    """Validation metrics of the last evaluation (from the message hub)."""
    scalars = runner.message_hub.log_scalars
    return {k[len('val/'):]: v.current() for k, v in scalars.items() if k.startswith('val/')}


@exits_on_user_errors('test')
def test_main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector or segmentor')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='mmdet: dump raw results to this .pkl file; mmseg: save '
                                      'predicted label maps to this directory')
    parser.add_argument('--show-dir', help='save drawn predictions to this directory')
    parser.add_argument('--fuse', action='store_true',
                        help='fuse the model (switch_to_deploy, Conv+BN folding) before testing')
    _common_args(parser)
    args = parser.parse_args(argv)
    cfg, framework, notes = _load_config(args)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        hook = cfg.default_hooks.visualization
        hook['draw'] = True
        if framework == 'mmdet':
            hook['test_out_dir'] = osp.abspath(args.show_dir)
        else:
            hook['interval'] = 1  # draw every test image, not every 50th
            cfg.visualizer['save_dir'] = osp.abspath(args.show_dir)
    if args.out and framework == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True
    runner = _build_runner(cfg)
    speed_hook = EvalSpeedHook(fuse=args.fuse)
    runner.register_hook(speed_hook)
    for note in notes:
        print_log(f'[evit_mm] {note}', logger='current')
    if args.out and framework == 'mmdet':
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError('--out must name a .pkl or .pickle file for detection results.')
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    metrics = runner.test()
    if runner.rank == 0:
        _write_metrics(osp.join(cfg.work_dir, 'test_metrics.json'), args, metrics,
                       speed_hook.speed)
        print(summary_line('test', metrics, framework, speed_hook.speed, args.demo))
    return metrics


@exits_on_user_errors('image_demo')
def image_demo_main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(description='Draw the predictions of a model on one image')
    parser.add_argument('config', help='config file (for a --demo model: the one saved in its '
                                       'work dir)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out-file', required=True, help='where to write the drawn image')
    parser.add_argument('--device', default='cpu', help='cpu or cuda:0')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detection score threshold')
    parser.add_argument('--opacity', type=float, default=0.5, help='segmentation overlay opacity')
    args = parser.parse_args(argv)
    cfg = load_config(args.config, pretrained=False)  # the checkpoint holds every weight
    framework = framework_of(cfg)
    if framework == 'mmdet':
        import mmcv
        from mmdet.apis import inference_detector, init_detector
        from mmdet.registry import VISUALIZERS
        model = init_detector(cfg, args.checkpoint, device=args.device)
        result = inference_detector(model, args.image)
        visualizer = VISUALIZERS.build(model.cfg.visualizer)
        visualizer.dataset_meta = model.dataset_meta
        visualizer.add_datasample('result', mmcv.imread(args.image, channel_order='rgb'),
                                  data_sample=result, draw_gt=False, show=False,
                                  pred_score_thr=args.score_thr, out_file=args.out_file)
        count = int((result.pred_instances.scores >= args.score_thr).sum())
        print(f'{count} detections with score >= {args.score_thr} drawn to {args.out_file}')
    else:
        from mmseg.apis import inference_model, init_model, show_result_pyplot
        model = init_model(cfg, args.checkpoint, device=args.device)
        result = inference_model(model, args.image)
        show_result_pyplot(model, args.image, result, opacity=args.opacity, show=False,
                           out_file=args.out_file)
        labels = result.pred_sem_seg.data.unique().tolist()
        print(f'segmentation with {len(labels)} classes drawn to {args.out_file}')
    return args.out_file
