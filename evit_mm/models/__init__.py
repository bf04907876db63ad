from .base import HierarchicalViT
from .efficientvit import EfficientViT
from .necks import EfficientViTFPN
from .shvit import SHViT

FAMILIES = {'efficientvit': EfficientViT, 'shvit': SHViT}


def build_backbone(name: str, **kwargs) -> HierarchicalViT:
    """A backbone by its official name, e.g. ``'efficientvit_m4'`` or ``'shvit_s1'``."""
    family = name.lower().split('_')[0]
    if family not in FAMILIES:
        raise KeyError(f'Unknown backbone {name!r}: use efficientvit_m0..m5 or shvit_s1..s4.')
    return FAMILIES[family](name, **kwargs)


__all__ = ['EfficientViT', 'EfficientViTFPN', 'HierarchicalViT', 'SHViT', 'build_backbone']
