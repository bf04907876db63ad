"""Reading official and mmengine checkpoints into the backbones.

* :data:`PRETRAINED_URLS` maps short names (``'efficientvit_m4'``, ``'shvit_s4'``)
  to the official ImageNet release files.
* :func:`read_checkpoint` loads a path, URL or short name with
  ``weights_only=True``; only plain data types (tensors, containers, numbers,
  ``argparse.Namespace``, numpy arrays/scalars and mmengine's log buffers) can be
  unpickled, so a downloaded file can't run code.
* :func:`load_pretrained` converts the official format (classification head,
  index buffers, 4x4 stage-3 bias tables of the 224 classifier) and fills every
  backbone tensor, or raises :class:`CheckpointError` naming the keys and shapes.
"""
import argparse
import collections
import os
import pickle
import urllib.error
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log

_EFFICIENTVIT_URL = ('https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/'
                     'download/v1.0/efficientvit_m{}.pth')
_SHVIT_URL = 'https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s{}.pth'
PRETRAINED_URLS: Dict[str, str] = {
    **{f'efficientvit_m{i}': _EFFICIENTVIT_URL.format(i) for i in range(6)},
    **{f'shvit_s{i}': _SHVIT_URL.format(i) for i in range(1, 5)},
}
DROPPED_PREFIXES = ('head.', 'dist_head.')
DROPPED_SUFFIXES = ('attention_bias_idxs',)


class CheckpointError(RuntimeError):
    """A checkpoint that can't be read or doesn't fit the model; the message says why."""


def _safe_globals() -> list:
    from mmengine.logging import HistoryBuffer
    multiarray = (np._core if hasattr(np, '_core') else np.core).multiarray
    safe = [argparse.Namespace, collections.Counter, HistoryBuffer, np.ndarray, np.dtype]
    safe += [multiarray._reconstruct, multiarray.scalar]
    safe += [type(np.dtype(t)) for t in ('float16', 'float32', 'float64', 'int32', 'int64',
                                         'uint8', 'bool')]
    return safe


def safe_torch_load(path: str, map_location='cpu'):
    """``torch.load(weights_only=True)`` that also accepts the data types mmengine writes."""
    with torch.serialization.safe_globals(_safe_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def resolve_checkpoint(source: str) -> str:
    """Map a short name to its official URL; return anything else unchanged."""
    return PRETRAINED_URLS.get(source, source)


def _download(url: str) -> str:
    """Download ``url`` into the torch hub cache (once) and return the local path."""
    cache_dir = os.path.join(torch.hub.get_dir(), 'checkpoints')
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


def read_checkpoint(source: str, map_location='cpu') -> dict:
    """Load a checkpoint from a local path, an http(s) URL or a short name."""
    location = resolve_checkpoint(str(source))
    if location.startswith(('http://', 'https://')):
        path = _download(location)
    else:
        path = os.path.expanduser(location)
        if not os.path.isfile(path):
            raise CheckpointError(
                f'Checkpoint {source!r} is neither an existing file nor a known short name '
                f'({", ".join(PRETRAINED_URLS)}) nor an http(s) URL.')
    try:
        checkpoint = safe_torch_load(path, map_location)
    except pickle.UnpicklingError as exc:
        if 'weights only' in str(exc).lower() or 'unsupported global' in str(exc).lower():
            raise CheckpointError(
                f'{path} contains pickled Python objects other than tensors and plain data, '
                f'so it is not loaded (weights_only=True protects against code in downloaded '
                f'files). If you trust it, re-save just its weights: torch.save({{"state_dict": '
                f'torch.load(p, weights_only=False)["state_dict"]}}, new_path). Details: {exc}'
            ) from exc
        raise CheckpointError(f'{path} is corrupted or not a PyTorch checkpoint ({exc}); '
                              're-download or re-save it.') from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(f'{path} is corrupted or not a PyTorch checkpoint ({exc}); '
                              're-download or re-save it.') from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f'{path} holds a {type(checkpoint).__name__}, not a dict of '
                              'weights; expected {"model": ...}, {"state_dict": ...} or a '
                              'bare state dict.')
    return checkpoint


def extract_state_dict(checkpoint: dict, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The backbone's weights from any supported layout.

    Handles ``{'model': ...}`` (official), ``{'state_dict': ...}`` (mmengine), a bare
    state dict, a ``module.`` prefix (DDP) and a ``backbone.`` prefix (a detector or
    segmentor checkpoint), or an explicit ``prefix``.
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
        raise CheckpointError(f'Checkpoint entries {bad[:5]} are not tensors; is this a weights file?')
    return state_dict


def resize_attention_biases(biases: torch.Tensor, length: int) -> torch.Tensor:
    """Bicubically resize a ``[heads, S*S]`` bias table to ``[heads, length]``.

    The same interpolation as the official detection code (``align_corners=False``),
    used to turn the 4x4 stage-3 tables of the 224 classifier into 7x7 windows.
    """
    heads, old = biases.shape
    old_side, new_side = round(old ** 0.5), round(length ** 0.5)
    if old_side ** 2 != old or new_side ** 2 != length:
        raise CheckpointError(f'Cannot resize attention biases {tuple(biases.shape)} to '
                              f'{length} entries: both must be square numbers.')
    grid = biases.float().view(1, heads, old_side, old_side)
    resized = F.interpolate(grid, size=(new_side, new_side), mode='bicubic')
    return resized.view(heads, length).to(biases.dtype)


def convert_official(state_dict: Dict[str, torch.Tensor], model: nn.Module
                     ) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Adapt an official (or already converted) state dict to ``model``.

    Returns the converted dict and the keys dropped on purpose (classification
    head, index buffers, which the model derives itself).
    """
    expected = model.state_dict()
    converted, dropped = {}, []
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES) or key.endswith(DROPPED_SUFFIXES):
            dropped.append(key)
            continue
        target = expected.get(key)
        if target is not None and value.shape != target.shape:
            if key.endswith('attention_biases') and value.dim() == 2 \
                    and value.shape[0] == target.shape[0]:
                value = resize_attention_biases(value, target.shape[1])
            elif value.dim() == 2 and target.dim() == 4 and target.shape[2:] == (1, 1) \
                    and value.shape == target.shape[:2]:
                value = value[:, :, None, None]  # 1x1 conv stored as a linear weight
        converted[key] = value
    return converted, dropped


def _guess_arch(state_dict: Dict[str, torch.Tensor]) -> Optional[str]:
    """Name the registered backbone arch whose keys and shapes ``state_dict`` fits, if any."""
    from .models import EfficientViT, SHViT
    for cls in (EfficientViT, SHViT):
        for arch in cls.arch_zoo:
            for deploy in (False, True):
                with torch.device('meta'):
                    shapes = {k: v.shape for k, v in cls(arch, deploy=deploy).state_dict().items()}
                if shapes.keys() == state_dict.keys() and all(
                        shapes[k] == v.shape or k.endswith('attention_biases')
                        for k, v in state_dict.items()):
                    return f"{cls.__name__}(arch='{arch}'{', deploy=True' if deploy else ''})"
    return None


def _describe_mismatch(model: nn.Module, state_dict: Dict[str, torch.Tensor],
                       missing: List[str], unexpected: List[str],
                       mismatched: List[Tuple[str, tuple, tuple]]) -> str:
    name = type(model).__name__
    if hasattr(model, 'arch_name'):
        name += f"(arch='{model.arch_name}'{', deploy=True' if model.deploy else ''})"
    lines = [f'The checkpoint does not fit {name}:']

    def listing(title: str, items: list) -> None:
        if items:
            shown = ', '.join(str(i) for i in items[:8])
            more = f' ... (+{len(items) - 8} more)' if len(items) > 8 else ''
            lines.append(f'  {title} ({len(items)}): {shown}{more}')

    listing('missing keys', missing)
    listing('unexpected keys', unexpected)
    listing('shape mismatches (key, checkpoint, model)', mismatched)
    guess = _guess_arch(state_dict)
    if guess:
        lines.append(f'  The checkpoint matches {guess}: build that, or pass the matching '
                     'checkpoint.')
    elif any('.bn.' in k for k in missing) and not any('.bn.' in k for k in state_dict):
        lines.append('  It looks fused (no BatchNorm keys): build the model with deploy=True.')
    return '\n'.join(lines)


def load_state_dict_strict(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into ``model``, raising :class:`CheckpointError` unless every key fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [(k, tuple(v.shape), tuple(expected[k].shape))
                  for k, v in state_dict.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(_describe_mismatch(model, state_dict, missing, unexpected,
                                                 mismatched))
    model.load_state_dict(state_dict, strict=True)


def load_pretrained(model: nn.Module, source: str, prefix: Optional[str] = None) -> None:
    """Fill every tensor of ``model`` from ``source`` (path, URL or short name)."""
    state_dict = extract_state_dict(read_checkpoint(source), prefix)
    state_dict, dropped = convert_official(state_dict, model)
    load_state_dict_strict(model, state_dict)
    note = ''
    if dropped:
        kinds = sorted({'classification head' if k.startswith(DROPPED_PREFIXES)
                        else 'attention_bias_idxs (derived by the model)' for k in dropped})
        note = f'; dropped {len(dropped)} unused keys: {", ".join(kinds)}'
    print_log(f'Loaded {len(state_dict)} tensors into {type(model).__name__} from '
              f'{resolve_checkpoint(str(source))}{note}', logger='current')


def load_from_local_weights_only(filename: str, map_location=None):
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return read_checkpoint(filename, map_location)


def load_from_http_weights_only(filename: str, map_location=None, model_dir=None):
    if model_dir is not None:
        raise CheckpointError('model_dir is not supported; checkpoints go to the torch hub cache.')
    return read_checkpoint(filename, map_location)


_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_state(self) -> dict:
    """``HistoryBuffer.__getstate__`` without its built-in statistics methods.

    mmengine pickles them as ``getattr(HistoryBuffer, 'min')`` & co., which a
    weights-only load must refuse; ``__setstate__`` re-registers them anyway.
    """
    state = {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}
    custom = {k: v for k, v in self._statistics_methods.items() if k not in _DEFAULT_STATISTICS}
    if custom:
        state['statistics_methods'] = custom
    return state


def use_safe_checkpoint_loaders() -> None:
    """Make mmengine read local and http(s) checkpoints with ``weights_only=True`` plus mmengine's types.

    With torch >= 2.6, mmengine 0.10.7's ``torch.load`` defaults to weights-only and
    fails on its own runner checkpoints (``--resume``, ``load_from``) because they hold
    ``HistoryBuffer`` and numpy objects; and its URL loader unpickles downloads with
    ``weights_only=False``. Both now use :func:`safe_torch_load`, which admits exactly
    those data types and nothing that can run code; and ``HistoryBuffer`` is saved
    as plain data (its default statistics methods are re-created on load).
    """
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader
    HistoryBuffer.__getstate__ = _history_buffer_state
    CheckpointLoader.register_scheme(prefixes='', force=True)(load_from_local_weights_only)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                     force=True)(load_from_http_weights_only)
