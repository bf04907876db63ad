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
from mmengine.config import Config

from .checkpoint import (CheckpointError, DROPPED_SUFFIXES, _describe_mismatch, extract_state_dict,
                         read_checkpoint)


def build_model_from_config(config: str, return_cfg: bool = False):
    """The config's model with random weights (the backbone's pretrained init is skipped);
    ``(model, cfg)`` with ``return_cfg``."""
    from .runtime import adapt_to_device, framework_of, register_framework
    cfg = Config.fromfile(config)
    register_framework(framework_of(cfg))
    adapt_to_device(cfg)
    cfg.model.backbone.init_cfg = None
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model)
    return (model, cfg) if return_cfg else model


def convert_detector(source: str, config: str) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Return ``(state_dict, meta)`` for ``config``'s model from an official checkpoint."""
    checkpoint = read_checkpoint(source)
    state = {k: v for k, v in extract_state_dict(checkpoint, prefix='').items()
             if not k.endswith(DROPPED_SUFFIXES)}
    model = build_model_from_config(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [(k, tuple(v.shape), tuple(expected[k].shape))
                  for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(_describe_mismatch(model, state, missing, unexpected, mismatched)
                              + f'\n  (target config: {config})')
    old_meta = checkpoint.get('meta') or {}
    classes = old_meta.get('CLASSES') or (old_meta.get('dataset_meta') or {}).get('classes')
    meta = dict(converted_from=str(source), source_mmdet_version=old_meta.get('mmdet_version'))
    if classes:
        meta['dataset_meta'] = dict(classes=tuple(classes))
    return {k: state[k] for k in expected}, meta
