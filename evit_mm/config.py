"""One way to prepare a config and build its model, for every tool and test.

:func:`load_config` reads the file, applies ``--cfg-options``, finds the framework
(mmdet or mmseg, from ``default_scope``), registers it and adapts the config to
the device; :func:`build_model` builds ``cfg.model``. Nothing here imports mmdet
or mmseg until a config asks for that framework, and a missing framework is
reported with the pip extra that installs it.
"""
import ast
import copy
import datetime
import importlib
import os
import os.path as osp
from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import MODELS, DefaultScope

from .errors import ConfigError, MissingExtraError

FRAMEWORKS = {'mmdet': 'det', 'mmseg': 'seg'}  # framework: evit_mm extra that installs it
PACKAGES = {'mmdet': 'mmdet', 'mmsegmentation': 'mmseg'}  # pip distribution: module


CONFIGS_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs')


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
    utils.register_all_modules(init_default_scope=False)
    current = DefaultScope.get_current_instance()
    if current is None or current.scope_name != framework:
        # a switch of framework in one process (mmdet and mmseg models side by side): a new
        # scope instance, as register_all_modules(init_default_scope=True) makes with a warning
        DefaultScope.get_instance(f'{framework}-{datetime.datetime.now()}',
                                  scope_name=framework)


def _base_files(path: str) -> List[str]:
    """The local (not ``pkg::``) ``_base_`` entries of a config file, as written."""
    try:
        tree = ast.parse(Path(path).read_text(encoding='utf-8'))
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return []
            bases = [value] if isinstance(value, str) else list(value)
            return [b for b in bases if isinstance(b, str) and '::' not in b]
    return []


def missing_base(path: str) -> Optional[Tuple[str, str, str]]:
    """``(config, base as written, resolved path)`` of the first ``_base_`` that does not exist
    in the inheritance chain of ``path``, or None."""
    for base in _base_files(path):
        resolved = osp.normpath(osp.join(osp.dirname(path), base))
        if not osp.isfile(resolved):
            return path, base, resolved
        deeper = missing_base(resolved)
        if deeper:
            return deeper
    return None


def _missing_base_message(config: str, base: str, resolved: str) -> str:
    name = osp.basename(base)
    ours = sorted(osp.join(root, name) for root, _, files in os.walk(CONFIGS_DIR)
                  if name in files)
    fix = (f"set _base_ = '{ours[0]}' in {config}, or keep the copy in the template's folder"
           if ours else 'correct the path (it is relative to the config\'s own folder), or give '
                        'an absolute path')
    return (f"Config {config} names _base_ '{base}', which is not there ({resolved}); "
            f'_base_ paths are relative to the config\'s own folder. Fix: {fix}.')


def read_config(path: str) -> Config:
    """A fresh copy of the config at ``path``; a file read before in this process (same
    text) is not parsed again: mmengine reads every metafile of mmdet or mmseg for each
    ``mmdet::``/``mmseg::`` base (over 1 s per config), and a tool reads a config several
    times."""
    if not osp.isfile(path):
        raise ConfigError(f'Config file not found: {path}.')
    return copy.deepcopy(_parsed(osp.abspath(path), Path(path).read_bytes()))


@lru_cache(maxsize=64)
def _parsed(path: str, content: bytes) -> Config:
    """``Config.fromfile(path)``, once per path and content (the cache key; a ``_base_`` file
    edited while one process runs is not read again)."""
    try:
        return Config.fromfile(path)
    except ModuleNotFoundError as exc:  # mmengine: "<package> is not installed" for a pkg:: base
        missing = [module for package, module in PACKAGES.items() if package in str(exc)]
        if missing:
            raise FrameworkMissingError(missing[0]) from exc
        raise
    except FileNotFoundError as exc:
        found = missing_base(osp.abspath(path))
        if found:
            raise ConfigError(_missing_base_message(*found)) from exc
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
    cfg = read_config(str(config))
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
