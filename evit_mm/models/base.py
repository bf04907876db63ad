"""The backbone skeleton both families share: 16x stem, three stages, dense outputs.

A subclass supplies its arch table (``arch_zoo``), the keys an arch dict must
have (``arch_keys``, of which ``stage_keys`` list one value per stage), and the
block of one stage (:meth:`make_block`). Everything an
OpenMMLab backbone is expected to do lives here once: ``out_indices``,
``frozen_stages``, ``norm_eval``, ``with_cp``, ``switch_to_deploy`` and loading
official checkpoints through ``init_cfg``.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from .layers import downsample_layers, fuse_modules, patch_embed_16x, validate_indices
from .pretrained import load_pretrained

NUM_STAGES = 3


class HierarchicalViT(BaseModule):
    """Stem (stride 16) and three stages (strides 16, 32, 64).

    Args:
        arch: A name from ``arch_zoo`` or a dict with the keys in ``arch_keys``.
        in_channels: Input image channels.
        out_indices: Stages whose outputs are returned (0, 1, 2).
        frozen_stages: -1 freezes nothing, 0 the stem, k the stem and stages 1..k.
        norm_eval: Keep BatchNorm layers in eval mode during training (as the
            official detection code always does).
        with_cp: Activation checkpointing per block (saves memory, costs time).
        deploy: Build, then :meth:`switch_to_deploy` (to load fused weights).
        deploy_channels_last: In deploy mode, run in channels-last (NHWC) memory
            format, which oneDNN convolutions on CPU run several times faster
            (outputs are returned in the default NCHW format either way).
        init_cfg: ``dict(type='Pretrained', checkpoint=...)`` accepts a path, an
            URL or a short name such as ``'efficientvit_m4'``; see
            :mod:`evit_mm.models.pretrained`.
    """

    arch_zoo: Dict[str, dict] = {}
    arch_keys: Tuple[str, ...] = ()
    stage_keys: Tuple[str, ...] = ()
    arch_defaults: Dict[str, object] = {}
    arch_prefix: str = ''

    def __init__(self, arch: Union[str, dict], in_channels: int = 3,
                 out_indices: Sequence[int] = (0, 1, 2), frozen_stages: int = -1,
                 norm_eval: bool = True, with_cp: bool = False, deploy: bool = False,
                 deploy_channels_last: bool = True, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_name, self.arch_settings = self.resolve_arch(arch)
        self.out_indices = validate_indices(out_indices, NUM_STAGES)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= NUM_STAGES:
            raise ValueError(f'frozen_stages={frozen_stages!r} is out of range: use -1 (none), '
                             f'0 (stem) or 1..{NUM_STAGES} (stem and stages 1..k).')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.deploy = False
        self.deploy_channels_last = deploy_channels_last

        dims = self.arch_settings['embed_dims']
        self.embed_dims: List[int] = list(dims)
        self.out_channels: List[int] = [dims[i] for i in self.out_indices]
        self.patch_embed = patch_embed_16x(in_channels, dims[0])
        for stage in range(NUM_STAGES):
            layers = [] if stage == 0 else downsample_layers(dims[stage - 1], dims[stage])
            layers += [self.make_block(stage) for _ in range(self.arch_settings['depths'][stage])]
            self.add_module(f'blocks{stage + 1}', nn.Sequential(*layers))
        self._freeze_stages()
        if deploy:
            self.switch_to_deploy()

    # ---- arch table -------------------------------------------------------
    @classmethod
    def resolve_arch(cls, arch: Union[str, dict]) -> Tuple[str, dict]:
        """Return ``(name, settings)`` for a zoo name or a settings dict."""
        if isinstance(arch, str):
            name = arch.lower()
            if name.startswith(cls.arch_prefix):
                name = name[len(cls.arch_prefix):]
            if name not in cls.arch_zoo:
                raise KeyError(f'Unknown {cls.__name__} arch {arch!r}; choose one of '
                               f'{sorted(cls.arch_zoo)} or pass a dict with keys {list(cls.arch_keys)}.')
            return name, copy.deepcopy(cls.arch_zoo[name])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or dict, got {type(arch).__name__}.')
        missing = [k for k in cls.arch_keys if k not in arch and k not in cls.arch_defaults]
        unknown = [k for k in arch if k not in cls.arch_keys]
        if missing or unknown:
            raise KeyError(f'Custom {cls.__name__} arch: missing keys {missing}, unknown keys '
                           f'{unknown}; the keys are {list(cls.arch_keys)}.')
        settings = {**copy.deepcopy(cls.arch_defaults), **copy.deepcopy(arch)}
        for key in cls.stage_keys:
            value = settings[key]
            if not isinstance(value, (list, tuple)) or len(value) != NUM_STAGES:
                raise ValueError(f'arch[{key!r}] must list {NUM_STAGES} stages, got {value!r}.')
        return 'custom', settings

    def make_block(self, stage: int) -> nn.Module:
        raise NotImplementedError

    # ---- forward ------------------------------------------------------------
    @property
    def stages(self) -> List[nn.Sequential]:
        return [getattr(self, f'blocks{i + 1}') for i in range(NUM_STAGES)]

    @property
    def _memory_format(self) -> torch.memory_format:
        return (torch.channels_last if self.deploy and self.deploy_channels_last
                else torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        memory_format = self._memory_format
        x = self.patch_embed(x.contiguous(memory_format=memory_format))
        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage:
                if self.with_cp and self.training and torch.is_grad_enabled():
                    x = cp.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if i in self.out_indices:
                outs.append(x.contiguous())  # NCHW maps whatever the internal layout
        return tuple(outs)

    # ---- training behaviour -------------------------------------------------
    def _frozen_parts(self) -> List[nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.patch_embed] + self.stages[:self.frozen_stages]

    def _freeze_stages(self) -> None:
        for part in self._frozen_parts():
            part.eval()
            for param in part.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'HierarchicalViT':
        if mode and self.deploy:
            raise RuntimeError(f'This {type(self).__name__} is in deploy mode (fused Conv+BN) and '
                               'cannot be trained; build it with deploy=False to train.')
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ---- inference ----------------------------------------------------------
    def switch_to_deploy(self) -> None:
        """Fuse Conv+BN pairs and residual depthwise convs for inference, in place."""
        if self.deploy:
            return
        self.eval()
        fuse_modules(self)
        self.deploy = True
        self.to(memory_format=self._memory_format)

    # ---- weights ------------------------------------------------------------
    def init_weights(self) -> None:
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'))
        else:
            super().init_weights()
