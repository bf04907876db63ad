"""Registries of evit_mm, children of mmengine's root registries.

Configs refer to our modules as ``type='evit_mm.EfficientViT'`` after
``custom_imports=dict(imports=['evit_mm'], allow_failed_imports=False)``; the
``evit_mm.`` scope prefix lets mmdet, mmseg and mmpretrain find them through
their own registries, which are children of the same mmengine root.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, scope='evit_mm', locations=['evit_mm.models'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='evit_mm', locations=['evit_mm.engine'])
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='evit_mm', locations=['evit_mm.engine'])
