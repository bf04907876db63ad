"""Convert the official mmdet 2.x COCO detector checkpoints for our mmdet 3.x configs.

The official EfficientViT / SHViT detectors were trained with mmdet 2.x. Their
backbone, neck (EfficientViTFPN) and head keys are those of our models, apart
from the index buffers (which our backbones derive); the file layout is mmcv 1.x
(``meta`` with ``CLASSES``, optimizer state). The converter keeps the weights,
checks that every tensor of the target model is filled with the right shape,
and writes an mmengine checkpoint with ``dataset_meta``.
"""
from typing import Dict, Tuple

import torch

from .checkpoint import check_state_dict, extract_state_dict, read_checkpoint
from .config import build_model, load_config
from .models.pretrained import without_derived_keys


def convert_detector(source: str, config: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Return ``(state_dict, meta)`` for ``config``'s model from an official checkpoint."""
    checkpoint = read_checkpoint(source)
    state, _ = without_derived_keys(extract_state_dict(checkpoint, prefix=''))
    expected = build_model(load_config(config, pretrained=False)).state_dict()
    check_state_dict(expected, state, f'the model of {config}')
    old_meta = checkpoint.get('meta') or {}
    classes = old_meta.get('CLASSES') or (old_meta.get('dataset_meta') or {}).get('classes')
    meta = dict(converted_from=str(source), source_mmdet_version=old_meta.get('mmdet_version'))
    if classes:
        meta['dataset_meta'] = dict(classes=tuple(classes))
    return {k: state[k] for k in expected}, meta
