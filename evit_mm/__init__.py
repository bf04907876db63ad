"""evit_mm: EfficientViT and SHViT backbones for MMDetection 3.x and MMSegmentation 1.x.

Importing the package registers its models in the ``evit_mm`` registry scope and
changes nothing else. The opt-in fix for resuming mmengine checkpoints on
torch >= 2.6 lives in :mod:`evit_mm.compat`.
"""
from .models import EfficientViT, EfficientViTFPN, SHViT
from .version import __version__

__all__ = ['__version__', 'EfficientViT', 'EfficientViTFPN', 'SHViT']
