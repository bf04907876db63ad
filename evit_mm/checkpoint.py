"""Model-agnostic checkpoint I/O: read safely, find the state dict, load strictly.

* :func:`read_checkpoint` loads a local path or an http(s) URL with
  ``weights_only=True``; only plain data types (tensors, containers, numbers,
  ``argparse.Namespace``, numpy arrays/scalars and mmengine's log buffers) can be
  unpickled, so a downloaded file can't run code. Any failure to read a file
  becomes a :class:`CheckpointError` that names it.
* :func:`extract_state_dict` finds the weights in the usual layouts.
* :func:`check_state_dict` / :func:`load_state_dict_strict` fill every tensor of
  a model or raise a :class:`CheckpointError` naming keys and shapes.

Nothing here knows a model family; :mod:`evit_mm.models.pretrained` adds that.
"""
import argparse
import collections
import contextlib
import os
import pickle
import re
import urllib.error
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
from mmengine.logging import HistoryBuffer

from .errors import CheckpointError

StateDict = Dict[str, torch.Tensor]
MAX_LISTED = 8


def _safe_globals() -> list:
    multiarray = (np._core if hasattr(np, '_core') else np.core).multiarray
    safe = [argparse.Namespace, collections.Counter, HistoryBuffer, np.ndarray, np.dtype,
            multiarray._reconstruct, multiarray.scalar]
    safe += [type(np.dtype(t)) for t in ('float16', 'float32', 'float64', 'int32', 'int64',
                                         'uint8', 'bool')]
    return safe


def safe_torch_load(path: str, map_location='cpu'):
    """``torch.load(weights_only=True)`` that also accepts the data types mmengine writes.

    The allow-list is active only during this call; ``torch.load`` itself is unchanged. torch
    before 2.5 has no scoped allow-list: there, files holding only tensors load (the official
    checkpoints, a ``state_dict``), and a runner checkpoint with mmengine's other types is
    refused with the way to re-save its weights (mmengine's own ``load_from``/``--resume`` read
    it on that torch, which loads unrestricted by default).
    """
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    with safe_globals(_safe_globals()) if safe_globals else contextlib.nullcontext():
        return torch.load(path, map_location=map_location, weights_only=True)


def download_checkpoint(url: str, model_dir: Optional[str] = None) -> str:
    """Download ``url`` into ``model_dir`` (default: the torch hub cache), once; return the path."""
    cache_dir = model_dir or os.path.join(torch.hub.get_dir(), 'checkpoints')
    path = os.path.join(cache_dir, os.path.basename(url.split('?')[0]))
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, path, progress=True)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise CheckpointError(
                f'Could not download the checkpoint {url} ({exc}). Download it on a machine with '
                f'internet access, copy it here and pass the local file, e.g. '
                f'--cfg-options model.backbone.init_cfg.checkpoint=/path/to/'
                f'{os.path.basename(path)}, or put it at {path}.') from exc
    return path


def _unreadable(path: str, exc: BaseException) -> CheckpointError:
    detail = str(exc).split('WeightsUnpickler error:')[-1].strip()  # skip torch's long preamble
    detail = (detail.splitlines() or [''])[0][:200]
    return CheckpointError(f'{path} is corrupted or not a PyTorch checkpoint '
                           f'({type(exc).__name__}: {detail}); re-download or re-save it.')


def read_checkpoint(source: str, map_location='cpu', model_dir: Optional[str] = None) -> dict:
    """Load a checkpoint dict from a local path or an http(s) URL (downloaded once)."""
    source = str(source)
    if source.startswith(('http://', 'https://')):
        path = download_checkpoint(source, model_dir)
    else:
        path = os.path.expanduser(source)
        if not os.path.exists(path):
            raise CheckpointError(f'Checkpoint {source} not found: no such file or directory.')
    try:
        checkpoint = safe_torch_load(path, map_location)
    except pickle.UnpicklingError as exc:
        if re.search(r'unsupported (global|class)', str(exc), re.I):  # torch >= 2.4 / older
            raise CheckpointError(
                f'{path} contains pickled Python objects other than tensors and plain data, '
                f'so it is not loaded (weights_only=True protects against code in downloaded '
                f'files). If you trust it, re-save just its weights: torch.save({{"state_dict": '
                f'torch.load(p, weights_only=False)["state_dict"]}}, new_path). Details: {exc}'
            ) from exc
        raise _unreadable(path, exc) from exc
    except Exception as exc:  # noqa: BLE001  (torch raises many types on bad bytes)
        raise _unreadable(path, exc) from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a dict of '
                              'weights; expected {"model": ...}, {"state_dict": ...} or a '
                              'bare state dict.')
    return checkpoint


def extract_state_dict(checkpoint: dict, prefix: Optional[str] = None) -> StateDict:
    """The weights from any supported layout.

    Handles ``{'model': ...}`` (official), ``{'state_dict': ...}`` (mmengine), a bare
    state dict, a ``module.`` prefix (DDP) and a ``backbone.`` prefix (a detector or
    segmentor checkpoint, picked when ``prefix`` is None), or an explicit ``prefix``
    (``''`` keeps every key).
    """
    state_dict = checkpoint
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), dict):
            state_dict = checkpoint[key]
            break
    state_dict = {(k[7:] if k.startswith('module.') else k): v for k, v in state_dict.items()}
    if prefix is None and any(k.startswith('backbone.') for k in state_dict):
        prefix = 'backbone.'
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        picked = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not picked:
            raise CheckpointError(f'No key of the checkpoint starts with {prefix!r}; its keys '
                                  f'start with {sorted({k.split(".")[0] for k in state_dict})}.')
        state_dict = picked
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f'Checkpoint entries {bad[:5]} are not tensors; is this a weights '
                              'file?')
    return state_dict


def _listing(title: str, items: list) -> List[str]:
    if not items:
        return []
    shown = ', '.join(str(i) for i in items[:MAX_LISTED])
    more = f' ... (+{len(items) - MAX_LISTED} more)' if len(items) > MAX_LISTED else ''
    return [f'  {title} ({len(items)}): {shown}{more}']


def check_state_dict(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor],
                     target: str, hint: Optional[Callable[[Mapping], Optional[str]]] = None
                     ) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has exactly the keys and shapes
    of ``expected``; ``target`` names the model, ``hint(state_dict)`` may add a suggestion."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched: List[Tuple[str, tuple, tuple]] = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if not (missing or unexpected or mismatched):
        return
    lines = [f'The checkpoint does not fit {target}:']
    lines += _listing('missing keys', missing)
    lines += _listing('unexpected keys', unexpected)
    lines += _listing('shape mismatches (key, checkpoint, model)', mismatched)
    suggestion = hint(state_dict) if hint else None
    if suggestion:
        lines.append(f'  {suggestion}')
    raise CheckpointError('\n'.join(lines))


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           target: Optional[str] = None,
                           hint: Optional[Callable[[Mapping], Optional[str]]] = None) -> None:
    """Load ``state_dict`` into ``model`` only if every key fits (nothing is half-loaded)."""
    check_state_dict(model.state_dict(), state_dict, target or type(model).__name__, hint)
    model.load_state_dict(state_dict, strict=True)
