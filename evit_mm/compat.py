"""Opt-in fix: mmengine 0.10.7 resume and ``load_from`` on torch >= 2.6, without loosening safety.

torch >= 2.6 loads checkpoints weights-only by default and mmengine 0.10.7 does not
opt out, so it cannot read its own runner checkpoints (they hold ``HistoryBuffer``
and numpy objects). Instead of switching weights-only off, this module

* registers loaders for local files and http(s) URLs in mmengine's
  ``CheckpointLoader`` that read with :func:`evit_mm.checkpoint.safe_torch_load`:
  weights-only plus exactly those data types, so downloaded files still cannot
  run code; URLs keep mmengine's "rank 0 downloads, the others wait" order;
* saves ``HistoryBuffer`` without its built-in statistics methods, which mmengine
  would pickle as functions that a weights-only load refuses.

Importing this module turns the fix on for the whole process (the loaders only where torch
loads weights-only by default, 2.6 and later: before that mmengine reads its checkpoints
itself); ``import evit_mm`` does not. Our ``tools/train.py``, ``tools/test.py`` and
``tools/image_demo.py`` import it; a project of your own opts in with::

    custom_imports = dict(imports=['evit_mm', 'evit_mm.compat'], allow_failed_imports=False)
"""
import os
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader
from packaging.version import Version

from .checkpoint import read_checkpoint

_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def load_local_weights_only(filename: str, map_location=None) -> dict:
    """mmengine loader for local files: weights-only with mmengine's data types."""
    return read_checkpoint(os.path.expanduser(filename), map_location)


def load_http_weights_only(filename: str, map_location=None,
                           model_dir: Optional[str] = None) -> dict:
    """mmengine loader for URLs: rank 0 downloads first, the other ranks then read the cache."""
    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = read_checkpoint(filename, map_location, model_dir)
    if world_size > 1:
        dist.barrier()
        if rank > 0:
            checkpoint = read_checkpoint(filename, map_location, model_dir)
    return checkpoint


def history_buffer_state(self: HistoryBuffer) -> dict:
    """``HistoryBuffer.__getstate__`` without the built-in statistics methods.

    ``__setstate__`` registers those again on load; custom ones are kept.
    """
    state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
    custom = {k: v for k, v in self._statistics_methods.items() if k not in _DEFAULT_STATISTICS}
    if custom:
        state['statistics_methods'] = custom
    return state


def needed() -> bool:
    """torch >= 2.6 (pre-releases included): ``torch.load`` is weights-only by default."""
    return Version(torch.__version__).release >= (2, 6)


def enable() -> None:
    """Turn the fix on (idempotent). Checkpoints are saved without pickled functions on every
    torch (so a run trained on torch 2.5 resumes on 2.6); the weights-only loaders are
    registered where torch loads weights-only by default (:func:`needed`)."""
    HistoryBuffer.__getstate__ = history_buffer_state
    if not needed():
        return
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_weights_only, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                     loader=load_http_weights_only, force=True)


enable()
