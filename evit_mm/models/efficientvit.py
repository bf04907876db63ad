"""EfficientViT (Liu et al., CVPR 2023) as a dense-prediction backbone.

What is specific to EfficientViT: cascaded group attention with learned
relative-position biases in 7x7 local windows, and the sandwich block
(depthwise conv, FFN, attention, depthwise conv, FFN).

As in the official detection backbone, a feature map is zero-padded to a
multiple of the window and the padded tokens take part in attention. Maps
smaller than one window are padded up to it too (the official code crashes on
them).
"""
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from .base import HierarchicalViT
from .layers import FFN, ConvBN, Residual, attend, depthwise_residual, is_channels_last


def relative_offset_index(window: int) -> torch.Tensor:
    """``[N, N]`` index (N = window**2) of the |dy|, |dx| offset between two tokens.

    The offset (dy, dx) gets index ``dy * window + dx``: the order in which the
    official code meets the offsets, so its bias tables load unchanged.
    """
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    return (ys[:, None] - ys[None, :]).abs() * window + (xs[:, None] - xs[None, :]).abs()


class CascadedGroupAttention(nn.Module):
    """Attention in which head i sees channel group i plus head i-1's output.

    Args:
        dim: Channels in and out.
        key_dim: Query/key width per head.
        num_heads: Heads; each takes ``dim // num_heads`` input channels and
            outputs that many value channels.
        kernels: Depthwise kernel applied to each head's query.
        window: Side of the (square) token grid the biases are defined on.
    """

    def __init__(self, dim: int, key_dim: int, num_heads: int, kernels: Sequence[int],
                 window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} must be divisible by num_heads {num_heads}.')
        if len(kernels) < num_heads:
            raise ValueError(f'{num_heads} heads need {num_heads} query kernels, got {kernels}.')
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = dim // num_heads
        self.scale = key_dim ** -0.5
        self.qkvs = nn.ModuleList(
            ConvBN(dim // num_heads, 2 * key_dim + self.value_dim)
            for _ in range(num_heads))
        self.dws = nn.ModuleList(
            ConvBN(key_dim, key_dim, k, 1, k // 2, groups=key_dim)
            for k in kernels[:num_heads])
        self.proj = nn.Sequential(
            nn.ReLU(inplace=True),
            ConvBN(self.value_dim * num_heads, dim, bn_weight_init=0.0))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        self.register_buffer('attention_bias_idxs', relative_offset_index(window),
                             persistent=False)
        self._bias_cache: Dict[str, Tuple[tuple, torch.Tensor]] = {}

    def _gather_biases(self) -> torch.Tensor:
        n = self.attention_bias_idxs.shape[0]
        flat = torch.index_select(self.attention_biases, 1, self.attention_bias_idxs.flatten())
        return flat.view(self.num_heads, n, n)

    def attention_bias(self) -> torch.Tensor:
        """``[heads, N, N]`` biases; cached per device for inference.

        The cache entry is keyed on the parameter's storage and version counter,
        so it is rebuilt after ``.to()``, ``load_state_dict`` or any in-place update.
        """
        param = self.attention_biases
        if (self.training or (torch.is_grad_enabled() and param.requires_grad)
                or param.is_inference()  # no version counter to validate a cache entry
                or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return self._gather_biases()
        token = (param.data_ptr(), param._version, param.dtype)
        device = str(param.device)
        cached = self._bias_cache.get(device)
        if cached is None or cached[0] != token:
            cached = (token, self._gather_biases())
            self._bias_cache[device] = cached
        return cached[1]

    def train(self, mode: bool = True) -> 'CascadedGroupAttention':
        super().train(mode)
        if mode:
            self._bias_cache.clear()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.attention_bias()
        channels_last = is_channels_last(x)
        groups = x.chunk(self.num_heads, dim=1)
        outputs: List[torch.Tensor] = []
        feat = groups[0]
        for i in range(self.num_heads):
            if i:
                feat = feat + groups[i]
            q, k, v = self.qkvs[i](feat).split(
                [self.key_dim, self.key_dim, self.value_dim], dim=1)
            q = self.dws[i](q).flatten(2)
            attn = torch.baddbmm(bias[i], q.transpose(-2, -1), k.flatten(2), alpha=self.scale)
            feat = attend(attn.softmax(dim=-1), v, channels_last)
            outputs.append(feat)
        return self.proj(torch.cat(outputs, dim=1))


class LocalWindowAttention(nn.Module):
    """Zero-pad to a multiple of the window, attend inside each window, crop back."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, kernels: Sequence[int],
                 window: int = 7) -> None:
        super().__init__()
        self.window = window
        self.attn = CascadedGroupAttention(dim, key_dim, num_heads, kernels, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        win = self.window
        pad_b, pad_r = -height % win, -width % win
        # traced (ONNX export): always pad and crop, by amounts computed in the graph, so that
        # a dynamic-shape graph is right at sizes that need no padding at export and do later
        padded = torch.jit.is_tracing() or pad_b or pad_r
        if padded:
            x = F.pad(x, (0, pad_r, 0, pad_b))
        n_h, n_w = (height + pad_b) // win, (width + pad_r) // win
        # One partition for both memory formats: windows are [B', win, win, C] in memory, so
        # channels-last maps are never transposed (NCHW maps pay the one copy they need anyway).
        windows = x.permute(0, 2, 3, 1).reshape(batch, n_h, win, n_w, win, channels)
        windows = windows.transpose(2, 3).reshape(-1, win, win, channels)
        windows = self.attn(windows.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = windows.reshape(batch, n_h, n_w, win, win, channels).transpose(2, 3)
        x = x.reshape(batch, n_h * win, n_w * win, channels).permute(0, 3, 1, 2)
        if padded:
            x = x[:, :, :height, :width]
        return x


class EfficientViTBlock(nn.Module):
    """Sandwich block: DW conv, FFN, window attention, DW conv, FFN (all residual)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, kernels: Sequence[int],
                 window: int) -> None:
        super().__init__()
        self.dw0 = depthwise_residual(dim)
        self.ffn0 = Residual(FFN(dim, dim * 2))
        self.mixer = Residual(LocalWindowAttention(dim, key_dim, num_heads, kernels, window))
        self.dw1 = depthwise_residual(dim)
        self.ffn1 = Residual(FFN(dim, dim * 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn1(self.dw1(self.mixer(self.ffn0(self.dw0(x)))))


_DEFAULTS = dict(key_dims=[16, 16, 16], kernels=[5, 5, 5, 5], window_size=7)
# name: embed_dims, depths, num_heads, query kernels (official classification tables)
_ARCH_ZOO = {
    name: dict(_DEFAULTS, embed_dims=dims, depths=depths, num_heads=heads, kernels=kernels)
    for name, dims, depths, heads, kernels in [
        ('m0', [64, 128, 192], [1, 2, 3], [4, 4, 4], [5, 5, 5, 5]),
        ('m1', [128, 144, 192], [1, 2, 3], [2, 3, 3], [7, 5, 3, 3]),
        ('m2', [128, 192, 224], [1, 2, 3], [4, 3, 2], [7, 5, 3, 3]),
        ('m3', [128, 240, 320], [1, 2, 3], [4, 3, 4], [5, 5, 5, 5]),
        ('m4', [128, 256, 384], [1, 2, 3], [4, 4, 4], [7, 5, 3, 3]),
        ('m5', [192, 288, 384], [1, 3, 4], [3, 3, 4], [7, 5, 3, 3]),
    ]
}


@MODELS.register_module()
class EfficientViT(HierarchicalViT):
    """EfficientViT M0-M5 backbone with outputs at strides 16, 32 and 64.

    ``arch`` is ``'m0'``..``'m5'`` (or ``'efficientvit_m4'``) or a dict with
    ``embed_dims``, ``depths``, ``num_heads`` and optionally ``key_dims``
    (default 16), ``kernels`` (query kernels per head, default 5) and
    ``window_size`` (default 7). M0 uses the classification kernels [5, 5, 5, 5],
    so every ImageNet-pretrained tensor loads. Other arguments: see
    :class:`~evit_mm.models.base.HierarchicalViT`.
    """

    arch_prefix = 'efficientvit_'
    arch_keys = ('embed_dims', 'depths', 'num_heads', 'key_dims', 'kernels', 'window_size')
    stage_keys = ('embed_dims', 'depths', 'num_heads', 'key_dims')
    arch_defaults = dict(_DEFAULTS)
    arch_zoo = _ARCH_ZOO

    def make_block(self, stage: int) -> nn.Module:
        s = self.arch_settings
        return EfficientViTBlock(s['embed_dims'][stage], s['key_dims'][stage],
                                 s['num_heads'][stage], s['kernels'], s['window_size'])
