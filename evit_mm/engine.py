"""Runner components used by the evit_mm tools: data checks, a non-finite-loss guard,
a reseeding hook, test-time speed and a CPU DDP wrapper."""
import math
import random
import time
import zlib
from typing import List, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel

from .data_checks import (MMSEG_IGNORE_INDEX, check_batch_labels, check_training_data,
                          head_num_classes)
from .errors import DataError
from .inference import fuse_model
from .registry import HOOKS, MODEL_WRAPPERS


def _derived_seed(seed: int, *steps: int) -> int:
    return zlib.crc32(np.array([seed, *steps], dtype=np.int64).tobytes())


@HOOKS.register_module()
class ReproducibleResumeHook(Hook):
    """Reseed Python, NumPy and torch from (seed, epoch, iteration) during training.

    mmengine restores model, optimizer, scheduler and sampler on ``--resume``, but
    not the random streams, so augmentations and dropout after a resume differ from
    the uninterrupted run. Deriving the stream from the position in the schedule
    makes a resumed run reproduce the losses of an uninterrupted one (epoch-based
    loops; with ``num_workers=0`` or non-persistent workers).
    """

    priority = 'VERY_HIGH'

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def _reseed(self, *steps: int) -> None:
        value = _derived_seed(self.seed, *steps)
        random.seed(value)
        np.random.seed(value)
        torch.manual_seed(value)

    def before_train_epoch(self, runner) -> None:
        self._reseed(runner.epoch)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._reseed(runner.epoch, runner.iter)


@HOOKS.register_module()
class DatasetCheckHook(Hook):
    """Run :func:`~evit_mm.data_checks.check_training_data` once the runner has built the
    datasets, before any weight is loaded or any iteration runs."""

    priority = 'VERY_HIGH'

    def __init__(self, framework: str, strict_boxes: bool = False) -> None:
        self.framework = framework
        self.strict_boxes = strict_boxes

    def before_run(self, runner) -> None:
        datasets = {'train_dataloader': runner.train_dataloader.dataset}
        if runner.val_loop is not None:
            datasets['val_dataloader'] = runner.val_dataloader.dataset
        check_training_data(runner.cfg.model, datasets, self.framework, self.strict_boxes)


@HOOKS.register_module()
class LabelRangeHook(Hook):
    """Check every training and evaluation batch's labels against the heads' classes (and,
    mmseg, the ignore index) before they reach a loss or a metric, so a stray label value
    anywhere in the data stops the run with a :class:`DataError` naming it and its file."""

    priority = 'VERY_HIGH'

    def __init__(self, framework: str) -> None:
        self.framework = framework
        self.limits: Optional[tuple] = None

    def before_run(self, runner) -> None:
        heads = {k: v for k, v in head_num_classes(runner.cfg.model).items()
                 if not k.endswith('rpn_head.num_classes')}
        if not heads:
            return
        setting = min(heads, key=heads.get)
        ignore = None
        if self.framework == 'mmseg':
            head = runner.cfg.model.get('decode_head')
            head = head[0] if isinstance(head, (list, tuple)) else head
            ignore = (head or {}).get('ignore_index', MMSEG_IGNORE_INDEX)
        self.limits = (heads[setting], setting, ignore)

    def _check(self, data_batch) -> None:
        if self.limits is not None:
            num_classes, setting, ignore = self.limits
            check_batch_labels((data_batch or {}).get('data_samples') or [], self.framework,
                               num_classes, setting, ignore)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._check(data_batch)

    def before_val_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._check(data_batch)

    def before_test_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._check(data_batch)


def _image_files(data_batch) -> List[str]:
    samples = (data_batch or {}).get('data_samples') or []
    return [s.metainfo.get('img_path', '?') for s in samples if hasattr(s, 'metainfo')]


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop at the first non-finite loss, naming the iteration and the batch's images,
    and never let a checkpoint with non-finite weights replace a good one."""

    priority = 'VERY_HIGH'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        values = {k: float(torch.as_tensor(v).detach()) for k, v in (outputs or {}).items()
                  if 'loss' in k}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise DataError(
                f'Non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
                f'{bad}. Images of the batch: {", ".join(_image_files(data_batch))}. Training '
                'stopped; checkpoints written so far hold finite weights. Check these images\' '
                'annotations, or lower the learning rate.')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = [k for k, v in checkpoint.get('state_dict', {}).items()
               if torch.is_floating_point(v) and not torch.isfinite(v).all()]
        if bad:
            raise DataError(f'Refusing to save a checkpoint with non-finite weights ({bad[:3]}); '
                            'the previous checkpoint is kept.')


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for CPU modules (gloo), which take no ``device_ids``."""

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        super().__init__(module=module, device_ids=None, **kwargs)


@HOOKS.register_module()
class EvalSpeedHook(Hook):
    """Time the model's ``test_step`` / ``val_step`` (preprocessing, forward,
    post-processing) over the test set or each validation; data loading, evaluation and
    the first ``warmup`` iterations are excluded.

    Short evaluations warm up for at most half their iterations. With ``fuse=True`` the
    model is fused before the test (backbone ``switch_to_deploy`` and Conv+BN folding).
    :attr:`speed` holds the figures of the latest evaluation.
    """

    priority = 'VERY_LOW'

    def __init__(self, warmup: int = 5, fuse: bool = False) -> None:
        self.warmup = warmup
        self.fuse = fuse
        self.speed: dict = {}
        self._seconds = 0.0
        self._images = 0
        self._calls = 0
        self._warmup = warmup

    def _start(self, runner, step: str, dataloader) -> None:
        self._seconds, self._images, self._calls = 0.0, 0, 0
        self._warmup = min(self.warmup, len(dataloader) // 2)
        original = getattr(runner.model, step)

        def timed_step(data):
            start = time.perf_counter()
            outputs = original(data)
            if self._calls >= self._warmup:
                self._seconds += time.perf_counter() - start
                self._images += len(outputs)
            self._calls += 1
            return outputs
        setattr(runner.model, step, timed_step)  # an instance attribute, removed after

    def _stop(self, runner, step: str, dataloader) -> None:
        delattr(runner.model, step)
        self.speed = dict(fps=self._images / self._seconds if self._seconds else None,
                          images_timed=self._images,
                          warmup_iters=min(self._warmup, self._calls),
                          batch_size=dataloader.batch_size, fused=self.fuse,
                          device=str(next((p.device for p in runner.model.parameters()),
                                          'cpu')),
                          threads=torch.get_num_threads(), world_size=runner.world_size)

    def before_test(self, runner) -> None:
        if self.fuse:
            fuse_model(runner.model.module if hasattr(runner.model, 'module') else runner.model)
        self._start(runner, 'test_step', runner.test_dataloader)

    def after_test(self, runner) -> None:
        self._stop(runner, 'test_step', runner.test_dataloader)

    def before_val(self, runner) -> None:
        self._start(runner, 'val_step', runner.val_dataloader)

    def after_val(self, runner) -> None:
        self._stop(runner, 'val_step', runner.val_dataloader)


MAIN_METRICS = {'mmdet': ('coco/bbox_mAP', 'coco/segm_mAP', 'pascal_voc/mAP'),
                'mmseg': ('mIoU', 'aAcc')}


def summary_line(tool: str, metrics: dict, framework: str, speed: dict, demo: bool) -> str:
    """The final metrics and the speed of that evaluation, on one line."""
    shown = ', '.join(f'{k}={float(metrics[k]):.3f}' for k in MAIN_METRICS[framework]
                      if k in metrics)
    if not speed:
        timing = 'FPS – (no evaluation ran)'
    else:
        fps = f"{speed['fps']:.2f} FPS" if speed.get('fps') else 'FPS – (too few images to time)'
        ranks = f"; rank 0 of {speed['world_size']}" if speed['world_size'] > 1 else ''
        runtime = f"{speed['runtime']}, " if speed.get('runtime') else ''
        timing = (f"{fps} ({runtime}{speed['device']}, {speed['threads']} threads, batch "
                  f"{speed['batch_size']}, {'fused' if speed['fused'] else 'not fused'}; "
                  f"{speed['images_timed']} images timed after {speed['warmup_iters']} warm-up "
                  f"iterations; model step only, no data loading or evaluation{ranks})")
    data = ' on synthetic demo data, not COCO/ADE20K' if demo else ''
    return f"[evit_mm {tool}] {shown or 'no metrics'}{data} | {timing}"
