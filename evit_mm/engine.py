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

from .analysis.inference import fuse_model
from .data_checks import DataError, check_training_data
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
class TestSpeedHook(Hook):
    """Time the model's ``test_step`` (preprocessing, forward, post-processing) over the
    test set; data loading, evaluation and the first ``warmup`` iterations are excluded.

    Short test sets warm up for at most half their iterations. With ``fuse=True`` the
    loaded model is fused first (backbone ``switch_to_deploy`` and Conv+BN folding).
    The result is in :attr:`speed` after the test.
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

    def before_test(self, runner) -> None:
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        if self.fuse:
            fuse_model(model)
        self._seconds, self._images, self._calls = 0.0, 0, 0
        self._warmup = min(self.warmup, len(runner.test_dataloader) // 2)
        test_step = runner.model.test_step

        def timed_test_step(data):
            start = time.perf_counter()
            outputs = test_step(data)
            if self._calls >= self._warmup:
                self._seconds += time.perf_counter() - start
                self._images += len(outputs)
            self._calls += 1
            return outputs
        runner.model.test_step = timed_test_step  # an instance attribute, removed after

    def after_test(self, runner) -> None:
        del runner.model.test_step
        self.speed = dict(fps=self._images / self._seconds if self._seconds else None,
                          images_timed=self._images,
                          warmup_iters=min(self._warmup, self._calls),
                          batch_size=runner.test_dataloader.batch_size, fused=self.fuse,
                          device=str(next(runner.model.parameters()).device),
                          threads=torch.get_num_threads(), world_size=runner.world_size)
