"""One way to prepare a config and build its model, for every tool and test.

:func:`load_config` reads the file, applies ``--cfg-options``, finds the framework
(mmdet or mmseg, from ``default_scope``), registers it and adapts the config to
the device; :func:`build_model` builds ``cfg.model``. Nothing here imports mmdet
or mmseg until a config asks for that framework, and a missing framework is
reported with the pip extra that installs it.
"""
import importlib
import os
from typing import List, Optional, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import MODELS

FRAMEWORKS = {'mmdet': 'det', 'mmseg': 'seg'}  # framework: evit_mm extra that installs it
PACKAGES = {'mmdet': 'mmdet', 'mmsegmentation': 'mmseg'}  # pip distribution: module


class MissingExtraError(ImportError):
    """A package the task needs is not installed; the message names the extra to install."""


class FrameworkMissingError(MissingExtraError):
    """The config needs mmdet or mmseg, which is not installed; the message names the extra."""

    def __init__(self, framework: str) -> None:
        super().__init__(f"This config needs {framework}, which is not installed: pip install "
                         f"'evit_mm[{FRAMEWORKS[framework]}]' (or see tools/install.sh).")
        self.framework = framework


def framework_of(cfg: Config) -> str:
    """``'mmdet'`` or ``'mmseg'``, from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in FRAMEWORKS:
        raise ValueError(f'Config default_scope is {scope!r}; evit_mm tools run mmdet or mmseg '
                         'configs (inherit from an mmdet:: or mmseg:: base).')
    return scope


def register_framework(framework: str) -> None:
    """Import ``framework`` and register its modules as the default scope."""
    try:
        utils = importlib.import_module(f'{framework}.utils')
    except ImportError as exc:
        raise FrameworkMissingError(framework) from exc
    utils.register_all_modules(init_default_scope=True)


def _read(path: str) -> Config:
    try:
        return Config.fromfile(path)
    except ModuleNotFoundError as exc:  # mmengine: "<package> is not installed" for a pkg:: base
        missing = [module for package, module in PACKAGES.items() if package in str(exc)]
        if missing:
            raise FrameworkMissingError(missing[0]) from exc
        raise


def use_cpu_norms(cfg: Config) -> bool:
    """Replace SyncBN by BN everywhere (SyncBN needs CUDA); True if anything changed."""
    changed = False

    def visit(node) -> None:
        nonlocal changed
        if isinstance(node, dict):
            if node.get('type') == 'SyncBN':
                node['type'] = 'BN'
                changed = True
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(cfg._cfg_dict)
    return changed


def adapt_to_device(cfg: Config) -> List[str]:
    """CPU runs: BN instead of SyncBN, gloo and a CPU DDP wrapper. Returns notes to print."""
    notes: List[str] = []
    if torch.cuda.is_available():
        return notes
    if use_cpu_norms(cfg):
        notes.append('No CUDA device: SyncBN replaced by BN.')
    if cfg.get('launcher', 'none') != 'none':
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        cfg.model_wrapper_cfg = dict(type='evit_mm.CPUDistributedDataParallel')
        notes.append('No CUDA device: distributed over CPU processes with gloo.')
    return notes


def load_config(config: Union[str, os.PathLike], cfg_options: Optional[dict] = None,
                launcher: str = 'none', pretrained: bool = True) -> Config:
    """Read ``config``, merge ``cfg_options``, register its framework, adapt it to the device.

    ``pretrained=False`` drops the backbone's pretrained ``init_cfg`` (random weights:
    for speed and FLOP measurements, or before loading a full checkpoint).
    """
    cfg = _read(str(config))
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    register_framework(framework_of(cfg))
    cfg.launcher = launcher
    for note in adapt_to_device(cfg):
        print_log(f'[evit_mm] {note}', logger='current')
    if not pretrained:
        cfg.model.backbone.init_cfg = None
    return cfg


def build_model(cfg: Config) -> nn.Module:
    """The model of a config from :func:`load_config` (its framework is the default scope)."""
    return MODELS.build(cfg.model)


def init_cpu_distributed(cfg: Config) -> None:
    """Start the gloo process group for a torchrun launch on CPU (mmengine assumes CUDA)."""
    if cfg.get('launcher', 'none') == 'pytorch' and not torch.cuda.is_available() \
            and not dist.is_initialized():
        dist.init_process_group(backend='gloo')
