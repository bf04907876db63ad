"""Runner components used by the evit_mm tools: data checks, a non-finite-loss guard,
a reseeding hook and a CPU DDP wrapper."""
import math
import random
import zlib
from typing import List, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel

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
