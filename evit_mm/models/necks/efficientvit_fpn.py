"""FPN with transposed-conv levels finer than the backbone's stride 16.

The official EfficientViT and SHViT detectors use this neck: an mmdet FPN over
the three backbone maps (strides 16/32/64), plus ``num_extra_trans_convs`` 2x2
stride-2 transposed convs chained from the top-down stride-16 lateral, each
followed by a 3x3 conv, giving strides 8 (and 4). State-dict keys equal the
official ones (``lateral_convs``, ``fpn_convs``, ``extra_trans_convs``,
``extra_fpn_convs``), so official COCO detector checkpoints load.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import nn

from ...registry import MODELS

EXTRA_SOURCES = ('on_input', 'on_lateral', 'on_output')


@MODELS.register_module()
class EfficientViTFPN(BaseModule):
    """FPN whose finest outputs come from transposed convs (strides 16/2**k).

    Args:
        in_channels: Channels of each backbone input.
        out_channels: Channels of every output.
        num_outs: Outputs in total, ``num_extra_trans_convs`` finer levels first,
            then one per used backbone level, then extra coarser levels.
        start_level / end_level: Backbone levels used (end exclusive; -1 = all).
        add_extra_convs: ``False`` (max-pool the coarsest output for extra
            levels), ``'on_input'`` / ``'on_lateral'`` / ``'on_output'`` (stride-2
            3x3 convs), or ``True`` (= ``'on_input'``).
        relu_before_extra_convs: ReLU before the 2nd and later extra convs.
        no_norm_on_lateral: No norm on the lateral (and transposed) convs.
        num_extra_trans_convs: Finer levels made by transposed convs; 0 gives a
            plain FPN (the official code crashes there).
        conv_cfg / norm_cfg / act_cfg: For every ConvModule (official: None).
        upsample_cfg: Top-down interpolation (``size=`` unless ``scale_factor``).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, num_outs: int,
                 start_level: int = 0, end_level: int = -1,
                 add_extra_convs: Union[bool, str] = False,
                 relu_before_extra_convs: bool = False, no_norm_on_lateral: bool = False,
                 num_extra_trans_convs: int = 0, conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = None, act_cfg: Optional[dict] = None,
                 upsample_cfg: dict = dict(mode='nearest'),
                 init_cfg: Optional[dict] = dict(type='Xavier', layer='Conv2d',
                                                 distribution='uniform')) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.num_outs = num_outs
        self.relu_before_extra_convs = relu_before_extra_convs
        self.num_extra_trans_convs = num_extra_trans_convs
        self.upsample_cfg = dict(upsample_cfg)
        self.start_level = start_level
        self.end_level = len(self.in_channels) if end_level == -1 else end_level
        if not 0 <= start_level < self.end_level <= len(self.in_channels):
            raise ValueError(f'start_level={start_level}, end_level={end_level} must select at '
                             f'least one of the {len(self.in_channels)} inputs.')
        if add_extra_convs is True:
            add_extra_convs = 'on_input'
        if add_extra_convs not in (False, *EXTRA_SOURCES):
            raise ValueError(f'add_extra_convs={add_extra_convs!r}: use False, True or one of '
                             f'{EXTRA_SOURCES}.')
        self.add_extra_convs = add_extra_convs
        if not isinstance(num_extra_trans_convs, int) or num_extra_trans_convs < 0:
            raise ValueError(f'num_extra_trans_convs={num_extra_trans_convs!r} must be an int >= 0.')
        used = self.end_level - start_level
        self.num_coarse_extra = num_outs - used - num_extra_trans_convs
        if self.num_coarse_extra < 0:
            raise ValueError(
                f'num_outs={num_outs} is too small: it must cover the {used} backbone levels '
                f'plus num_extra_trans_convs={num_extra_trans_convs} finer levels '
                f'(num_outs >= {used + num_extra_trans_convs}).')
        if end_level != -1 and self.num_coarse_extra:
            raise ValueError(f'With end_level={end_level} no coarser extra level is possible; '
                             f'set num_outs={used + num_extra_trans_convs}.')

        lateral_norm = None if no_norm_on_lateral else norm_cfg
        common = dict(conv_cfg=conv_cfg, act_cfg=act_cfg, inplace=False)
        self.lateral_convs = nn.ModuleList(
            ConvModule(c, out_channels, 1, norm_cfg=lateral_norm, **common)
            for c in self.in_channels[start_level:self.end_level])
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, **common)
            for _ in range(used))
        if add_extra_convs:
            for i in range(self.num_coarse_extra):
                in_ch = (self.in_channels[self.end_level - 1]
                         if i == 0 and add_extra_convs == 'on_input' else out_channels)
                self.fpn_convs.append(ConvModule(in_ch, out_channels, 3, stride=2, padding=1,
                                                 norm_cfg=norm_cfg, **common))
        trans_cfg = dict(common, conv_cfg=dict(type='deconv'))
        self.extra_trans_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 2, stride=2, padding=0,
                       norm_cfg=lateral_norm, **trans_cfg)
            for _ in range(num_extra_trans_convs))
        self.extra_fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg, **common)
            for _ in range(num_extra_trans_convs))

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'{type(self).__name__} expects {len(self.in_channels)} inputs '
                             f'(in_channels={self.in_channels}), got {len(inputs)}.')
        laterals = [conv(inputs[self.start_level + i]) for i, conv in enumerate(self.lateral_convs)]
        for i in range(len(laterals) - 1, 0, -1):
            if 'scale_factor' in self.upsample_cfg:
                up = F.interpolate(laterals[i], **self.upsample_cfg)
            else:
                up = F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], **self.upsample_cfg)
            laterals[i - 1] = laterals[i - 1] + up

        finer: List[torch.Tensor] = []  # finest first
        source = laterals[0]
        for trans in self.extra_trans_convs:
            source = trans(source)
            finer.insert(0, source)

        outs = [self.fpn_convs[i](lat) for i, lat in enumerate(laterals)]
        used = len(laterals)
        if self.num_coarse_extra:
            if not self.add_extra_convs:
                for _ in range(self.num_coarse_extra):
                    outs.append(F.max_pool2d(outs[-1], 1, stride=2))
            else:
                source = {'on_input': inputs[self.end_level - 1], 'on_lateral': laterals[-1],
                          'on_output': outs[-1]}[self.add_extra_convs]
                outs.append(self.fpn_convs[used](source))
                for i in range(used + 1, used + self.num_coarse_extra):
                    prev = F.relu(outs[-1]) if self.relu_before_extra_convs else outs[-1]
                    outs.append(self.fpn_convs[i](prev))
        finer_outs = [conv(feat) for conv, feat in zip(self.extra_fpn_convs, finer)]
        return tuple(finer_outs + outs)
