"""Models built for measurement: from a config, optionally fused, with a pseudo input batch.

Shared by the benchmark, the FLOP counter and the ONNX exporter, so that all three
measure the same network.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.config import Config

from .checkpoint import extract_state_dict, load_state_dict_strict, read_checkpoint
from .config import build_model, framework_of, load_config


def build_inference_model(config: str, checkpoint: Optional[str] = None, fuse: bool = False,
                          device: str = 'cpu', cfg_options: Optional[dict] = None
                          ) -> Tuple[nn.Module, Config, str]:
    """``(model, cfg, framework)`` in eval mode on ``device``.

    Without a checkpoint the weights are the model's own initialisation (the network's
    speed does not depend on them; post-processing does, and a head initialised as for
    training scores like a real model: few boxes above the threshold, where arbitrary
    weights would send thousands to NMS); the backbone's pretrained ``init_cfg`` is
    never downloaded here. With
    ``fuse``, the backbone is switched to deploy and mmcv fuses the remaining
    Conv+BN pairs.
    """
    cfg = load_config(config, cfg_options, pretrained=False)
    model = build_model(cfg)
    framework = framework_of(cfg)
    if checkpoint:
        load_state_dict_strict(model, extract_state_dict(read_checkpoint(checkpoint), prefix=''))
    else:  # the heads' own initialisation (e.g. RetinaNet's prior-probability bias), so that
        # post-processing sees the few confident boxes of a real model, not thousands
        model.init_weights()
    model.eval()
    if fuse:
        fuse_model(model)
    return model.to(device), cfg, framework


def fuse_model(model: nn.Module) -> nn.Module:
    """Backbone ``switch_to_deploy`` and mmcv Conv+BN fusion for neck and heads, in place."""
    from mmcv.cnn import fuse_conv_bn
    backbone = getattr(model, 'backbone', model)
    if hasattr(backbone, 'switch_to_deploy'):
        backbone.switch_to_deploy()
    fuse_conv_bn(model)
    return model


def pseudo_batch(framework: str, height: int, width: int, batch: int = 1) -> dict:
    """A ``test_step`` batch of random uint8 images already at the network's input size."""
    inputs = [torch.randint(0, 256, (3, height, width), dtype=torch.uint8) for _ in range(batch)]
    meta = dict(img_shape=(height, width), ori_shape=(height, width), pad_shape=(height, width))
    if framework == 'mmdet':
        from mmdet.structures import DetDataSample
        samples = [DetDataSample(metainfo=dict(meta, scale_factor=(1.0, 1.0)))
                   for _ in range(batch)]
    else:
        from mmseg.structures import SegDataSample
        samples = [SegDataSample(metainfo=meta) for _ in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


class RawNetwork(nn.Module):
    """Image tensor in, the network's raw outputs out (no post-processing, no NMS).

    Single-stage detectors: classification and box maps of every level; segmentors:
    the decode head's logits; two-stage detectors: the RPN maps (the RoI heads run on
    proposals after NMS and are not a fixed tensor graph).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = ('decode_head' if hasattr(model, 'decode_head')
                     else 'rpn_head' if hasattr(model, 'rpn_head') else 'bbox_head')

    def forward(self, x: torch.Tensor) -> tuple:
        feats = self.model.neck(self.model.backbone(x))
        out = getattr(self.model, self.head)(feats)
        if isinstance(out, torch.Tensor):
            return (out,)
        return tuple(t for level in out for t in (level if isinstance(level, (list, tuple))
                                                  else [level]))
