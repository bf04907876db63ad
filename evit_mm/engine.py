"""Runner components used by the evit_mm tools: a reseeding hook and a CPU DDP wrapper."""
import random
import zlib

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel

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


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for CPU modules (gloo), which take no ``device_ids``."""

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        super().__init__(module=module, device_ids=None, **kwargs)
