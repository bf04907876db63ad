"""What loading official EfficientViT / SHViT weights needs to know about the models.

* :data:`PRETRAINED_URLS` maps short names (``'efficientvit_m4'``, ``'shvit_s4'``)
  to the official ImageNet release files.
* :func:`convert_official` drops the classification head and the index buffers
  and resizes the 4x4 stage-3 bias tables of the 224 classifier to 7x7 windows,
  as the official detection code does.
* :func:`matching_arch` names the registered backbone arch a state dict fits.
* :func:`load_pretrained` puts it together for ``init_cfg=dict(type='Pretrained')``.
"""
import os
from typing import List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log

from ..checkpoint import (CheckpointError, StateDict, extract_state_dict, load_state_dict_strict,
                          read_checkpoint)
from ..registry import MODELS

_EFFICIENTVIT_URL = ('https://github.com/xinyuliu-jeffrey/EfficientViT_Model_Zoo/releases/'
                     'download/v1.0/efficientvit_m{}.pth')
_SHVIT_URL = 'https://github.com/ysj9909/SHViT/releases/download/v1.0/shvit_s{}.pth'
PRETRAINED_URLS = {
    **{f'efficientvit_m{i}': _EFFICIENTVIT_URL.format(i) for i in range(6)},
    **{f'shvit_s{i}': _SHVIT_URL.format(i) for i in range(1, 5)},
}
DROPPED_PREFIXES = ('head.', 'dist_head.')
DROPPED_SUFFIXES = ('attention_bias_idxs',)


def resolve_checkpoint(source: str) -> str:
    """Map a short name to its official URL; return anything else unchanged."""
    return PRETRAINED_URLS.get(source, source)


def read_pretrained(source: str) -> dict:
    """Read a checkpoint given as a short name, an http(s) URL or a local path."""
    location = resolve_checkpoint(str(source))
    if not location.startswith(('http://', 'https://')) and \
            not os.path.exists(os.path.expanduser(location)):
        raise CheckpointError(
            f'Checkpoint {source!r} is neither an existing file nor a known short name '
            f'({", ".join(PRETRAINED_URLS)}) nor an http(s) URL.')
    return read_checkpoint(location)


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


def without_derived_keys(state_dict: Mapping[str, torch.Tensor]) -> Tuple[StateDict, List[str]]:
    """Drop the classification head and the index buffers (which the models derive)."""
    kept, dropped = {}, []
    for key, value in state_dict.items():
        if key.startswith(DROPPED_PREFIXES) or key.endswith(DROPPED_SUFFIXES):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def convert_official(state_dict: Mapping[str, torch.Tensor], model: nn.Module
                     ) -> Tuple[StateDict, List[str]]:
    """Adapt an official (or already converted) state dict to ``model``.

    Returns the converted dict and the keys dropped on purpose.
    """
    expected = model.state_dict()
    converted, dropped = without_derived_keys(state_dict)
    for key, value in converted.items():
        target = expected.get(key)
        if target is None or value.shape == target.shape:
            continue
        if key.endswith('attention_biases') and value.dim() == 2 \
                and value.shape[0] == target.shape[0]:
            converted[key] = resize_attention_biases(value, target.shape[1])
        elif value.dim() == 2 and target.dim() == 4 and target.shape[2:] == (1, 1) \
                and value.shape == target.shape[:2]:
            converted[key] = value[:, :, None, None]  # 1x1 conv stored as a linear weight
    return converted, dropped


def describe(model: nn.Module) -> str:
    """``EfficientViT(arch='m4')``, with ``deploy=True`` for a fused model."""
    name = type(model).__name__
    if hasattr(model, 'arch_name'):
        name += f"(arch='{model.arch_name}'{', deploy=True' if model.deploy else ''})"
    return name


def matching_arch(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """A suggestion naming the registered backbone arch (plain or fused) that
    ``state_dict`` fits, or None."""
    backbones = [cls for cls in MODELS.module_dict.values() if getattr(cls, 'arch_zoo', None)]
    for cls in backbones:
        for arch in cls.arch_zoo:
            for deploy in (False, True):
                with torch.device('meta'):
                    model = cls(arch, deploy=deploy)
                shapes = {k: v.shape for k, v in model.state_dict().items()}
                if shapes.keys() == state_dict.keys() and all(
                        shapes[k] == v.shape or k.endswith('attention_biases')
                        for k, v in state_dict.items()):
                    return f'The checkpoint matches {describe(model)}: build that, or pass ' \
                           'the matching checkpoint.'
    if not any('.bn.' in k for k in state_dict):
        return 'It looks fused (no BatchNorm keys): build the model with deploy=True.'
    return None


def load_backbone_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Strict load into a backbone, with the arch the weights fit named on a mismatch."""
    load_state_dict_strict(model, state_dict, describe(model), matching_arch)


def load_pretrained(model: nn.Module, source: str, prefix: Optional[str] = None) -> None:
    """Fill every tensor of ``model`` from ``source`` (path, URL or short name)."""
    state_dict = extract_state_dict(read_pretrained(source), prefix)
    state_dict, dropped = convert_official(state_dict, model)
    load_backbone_state_dict(model, state_dict)
    note = ''
    if dropped:
        kinds = sorted({'classification head' if k.startswith(DROPPED_PREFIXES)
                        else 'attention_bias_idxs (derived by the model)' for k in dropped})
        note = f'; dropped {len(dropped)} unused keys: {", ".join(kinds)}'
    print_log(f'Loaded {len(state_dict)} tensors into {type(model).__name__} from '
              f'{resolve_checkpoint(str(source))}{note}', logger='current')
