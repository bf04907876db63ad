"""evit_mm: EfficientViT and SHViT backbones for MMDetection 3.x and MMSegmentation 1.x."""
from .version import __version__
from . import models  # noqa: F401  (registers the modules)
from .models import EfficientViT, SHViT

__all__ = ['__version__', 'EfficientViT', 'SHViT']
