"""SHViT (Yun & Ro, CVPR 2024) as a dense-prediction backbone.

What is specific to SHViT: single-head self-attention over the first
``partial_dim`` channels (GroupNorm, no positional bias, global over the map,
so any input size works), with the remaining channels passed through to the
projection; the first stage uses convolution-only blocks.
"""
import torch
import torch.nn as nn

from ..registry import MODELS
from .base import HierarchicalViT
from .layers import FFN, ConvBN, Residual, attend, depthwise_residual, is_channels_last


class SingleHeadAttention(nn.Module):
    """Global single-head attention on a channel slice (official name: SHSA)."""

    def __init__(self, dim: int, qk_dim: int, partial_dim: int) -> None:
        super().__init__()
        if not 0 < partial_dim <= dim:
            raise ValueError(f'partial_dim {partial_dim} must be in 1..dim ({dim}).')
        self.dim = dim
        self.qk_dim = qk_dim
        self.partial_dim = partial_dim
        self.scale = qk_dim ** -0.5
        self.pre_norm = nn.GroupNorm(1, partial_dim)
        self.qkv = ConvBN(partial_dim, 2 * qk_dim + partial_dim)
        self.proj = nn.Sequential(nn.ReLU(inplace=True),
                                  ConvBN(dim, dim, bn_weight_init=0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        attended, passed = x.split([self.partial_dim, self.dim - self.partial_dim], dim=1)
        q, k, v = self.qkv(self.pre_norm(attended)).flatten(2).split(
            [self.qk_dim, self.qk_dim, self.partial_dim], dim=1)
        attn = torch.bmm(q.transpose(-2, -1), k).mul_(self.scale).softmax(dim=-1)
        attended = attend(attn, v.view(batch, self.partial_dim, height, width),
                          is_channels_last(x))
        return self.proj(torch.cat([attended, passed], dim=1))


class SHViTBlock(nn.Module):
    """Residual DW conv, residual single-head attention (``'s'``) or none (``'i'``), residual FFN."""

    def __init__(self, dim: int, qk_dim: int, partial_dim: int, block_type: str) -> None:
        super().__init__()
        if block_type not in ('s', 'i'):
            raise ValueError(f"SHViT block type must be 's' (attention) or 'i' (conv only), "
                             f'got {block_type!r}.')
        self.conv = depthwise_residual(dim)
        self.mixer = (Residual(SingleHeadAttention(dim, qk_dim, partial_dim))
                      if block_type == 's' else nn.Identity())
        self.ffn = Residual(FFN(dim, dim * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(self.mixer(self.conv(x)))


_DEFAULTS = dict(qk_dims=[16, 16, 16], types=['i', 's', 's'])
# name: embed_dims, depths, partial_dims (official classification tables)
_ARCH_ZOO = {
    name: dict(_DEFAULTS, embed_dims=dims, depths=depths, partial_dims=partial)
    for name, dims, depths, partial in [
        ('s1', [128, 224, 320], [2, 4, 5], [32, 48, 68]),
        ('s2', [128, 308, 448], [2, 4, 5], [32, 66, 96]),
        ('s3', [192, 352, 448], [3, 5, 5], [48, 75, 96]),
        ('s4', [224, 336, 448], [4, 7, 6], [48, 72, 96]),
    ]
}


@MODELS.register_module()
class SHViT(HierarchicalViT):
    """SHViT S1-S4 backbone with outputs at strides 16, 32 and 64.

    ``arch`` is ``'s1'``..``'s4'`` (or ``'shvit_s4'``) or a dict with
    ``embed_dims``, ``depths``, ``partial_dims`` and optionally ``qk_dims``
    (default 16) and ``types`` (default ``['i', 's', 's']``). Other arguments:
    see :class:`~evit_mm.models.base.HierarchicalViT`.
    """

    arch_prefix = 'shvit_'
    arch_keys = ('embed_dims', 'depths', 'partial_dims', 'qk_dims', 'types')
    stage_keys = arch_keys
    arch_defaults = dict(_DEFAULTS)
    arch_zoo = _ARCH_ZOO

    def make_block(self, stage: int) -> nn.Module:
        s = self.arch_settings
        return SHViTBlock(s['embed_dims'][stage], s['qk_dims'][stage],
                          s['partial_dims'][stage], s['types'][stage])

