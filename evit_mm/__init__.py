"""evit_mm: EfficientViT and SHViT backbones for MMDetection 3.x and MMSegmentation 1.x."""
from . import models  # noqa: F401  (registers the modules)
from .checkpoint import use_safe_checkpoint_loaders
from .models import EfficientViT, EfficientViTFPN, SHViT
from .version import __version__

use_safe_checkpoint_loaders()

__all__ = ['__version__', 'EfficientViT', 'EfficientViTFPN', 'SHViT', 'use_safe_checkpoint_loaders']
