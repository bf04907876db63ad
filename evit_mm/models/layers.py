"""Building blocks shared by EfficientViT and SHViT.

Module and parameter names follow the official implementations (``c``/``bn``,
``m`` inside residuals, ``pw1``/``pw2``, ``conv1``..``conv3``/``se``), so the
official checkpoints load without renaming keys.

Every block that holds a Conv+BN can be fused for inference with
:func:`fuse_modules`, which swaps each :class:`ConvBN` for one ``nn.Conv2d`` and
folds a residual depthwise conv into its kernel (``x + dw(x)`` becomes one conv).
"""
from typing import List, Sequence

import torch
import torch.nn as nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (at least ``divisor``).

    Matches the squeeze-excite width of the official models (timm's SE, no
    round-up limit): e.g. 308 -> 312.
    """
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D map is laid out NHWC in memory (the deploy path's format)."""
    # no read of the channel count: while tracing it is a tensor (a bool of it warns); a 1x1 map
    # with stride(1) == 1 is contiguous either way and taken as NCHW, which computes the same
    return x.dim() == 4 and x.stride(1) == 1 and not x.is_contiguous()


def attend(attn: torch.Tensor, v: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Attention-weighted values as a ``[B, C, H, W]`` map in the requested memory format.

    ``attn``: ``[B, N, N]`` (rows: queries), ``v``: ``[B, C, H, W]`` with N = H*W.
    """
    batch, channels, height, width = v.shape
    if channels_last:
        out = torch.bmm(attn, v.flatten(2).transpose(1, 2))
        return out.view(batch, height, width, channels).permute(0, 3, 1, 2)
    return torch.bmm(v.flatten(2), attn.transpose(1, 2)).view(batch, channels, height, width)


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (``c``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1,
                 stride: int = 1, padding: int = 0, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__()
        self.add_module('c', nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                                       padding, groups=groups, bias=False))
        self.add_module('bn', nn.BatchNorm2d(out_channels))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """Return one ``nn.Conv2d`` computing the same function in eval mode."""
        conv, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                          conv.stride, conv.padding, groups=conv.groups, bias=True,
                          device=conv.weight.device, dtype=conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class Residual(nn.Module):
    """``x + m(x)``."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """Fold a residual depthwise :class:`ConvBN` into one conv; else fuse inside."""
        if isinstance(self.m, ConvBN) and _is_odd_depthwise(self.m.c):
            conv = self.m.fuse()
            k = conv.kernel_size[0]
            conv.weight[:, 0, k // 2, k // 2] += 1.0
            return conv
        fuse_modules(self)
        return self


def _is_odd_depthwise(conv: nn.Conv2d) -> bool:
    k = conv.kernel_size
    return (conv.groups == conv.in_channels == conv.out_channels and k[0] == k[1]
            and k[0] % 2 == 1 and conv.padding[0] == k[0] // 2 and conv.stride == (1, 1))


def depthwise_residual(channels: int, bn_weight_init: float = 0.0) -> Residual:
    """``x + BN(DWConv3x3(x))``; :meth:`Residual.fuse` folds it into one conv."""
    return Residual(ConvBN(channels, channels, 3, 1, 1, groups=channels,
                           bn_weight_init=bn_weight_init))


def fuse_modules(module: nn.Module) -> None:
    """Replace, in place, every fusable child (anything with ``fuse()``) by its fused form."""
    for name, child in module.named_children():
        if hasattr(child, 'fuse'):
            fused = child.fuse()
            if fused is not child:
                setattr(module, name, fused)
        else:
            fuse_modules(child)


class FFN(nn.Module):
    """Pointwise expansion, ReLU, pointwise projection (``pw1``, ``pw2``)."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.pw1 = ConvBN(channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.pw2 = ConvBN(hidden, channels, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class SqueezeExcite(nn.Module):
    """Channel attention with a quarter-width bottleneck (``fc1``, ``fc2``)."""

    def __init__(self, channels: int, ratio: float = 0.25) -> None:
        super().__init__()
        hidden = make_divisible(channels * ratio)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * gate.sigmoid()


class PatchMerging(nn.Module):
    """Inverted-residual downsampling: 1x1 up (x4), 3x3 depthwise stride 2, SE, 1x1 down."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        hidden = in_channels * 4
        self.conv1 = ConvBN(in_channels, hidden)
        self.act = nn.ReLU(inplace=True)
        self.conv2 = ConvBN(hidden, hidden, 3, 2, 1, groups=hidden)
        self.se = SqueezeExcite(hidden)
        self.conv3 = ConvBN(hidden, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.se(self.act(self.conv2(self.act(self.conv1(x))))))


def conv_ffn_pair(channels: int) -> nn.Sequential:
    """Residual depthwise conv then residual FFN: the sandwich around a downsampling."""
    return nn.Sequential(depthwise_residual(channels, bn_weight_init=1.0),
                         Residual(FFN(channels, channels * 2)))


def downsample_layers(in_channels: int, out_channels: int) -> List[nn.Module]:
    """The three modules that open stages 2 and 3 of both families."""
    return [conv_ffn_pair(in_channels), PatchMerging(in_channels, out_channels),
            conv_ffn_pair(out_channels)]


def patch_embed_16x(in_channels: int, embed_dim: int) -> nn.Sequential:
    """The 16x16 patchify stem: four 3x3 stride-2 Conv+BN, widths d/8, d/4, d/2, d."""
    widths = [in_channels, embed_dim // 8, embed_dim // 4, embed_dim // 2, embed_dim]
    layers: List[nn.Module] = []
    for i in range(4):
        if i:
            layers.append(nn.ReLU(inplace=True))
        layers.append(ConvBN(widths[i], widths[i + 1], 3, 2, 1))
    return nn.Sequential(*layers)


def validate_indices(out_indices: Sequence[int], num_stages: int) -> tuple:
    """Normalise ``out_indices`` (negative allowed) and reject anything else."""
    valid = list(range(num_stages))
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    result = []
    for idx in out_indices:
        if not isinstance(idx, int) or not -num_stages <= idx < num_stages:
            raise ValueError(f'out_indices={tuple(out_indices)!r} is invalid: each index must '
                             f'be one of {valid} (or negative from the end).')
        result.append(idx % num_stages)
    if not result or len(set(result)) != len(result):
        raise ValueError(f'out_indices={tuple(out_indices)!r} must be a non-empty selection '
                         f'of distinct stages from {valid}.')
    return tuple(sorted(result))

