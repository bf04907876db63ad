from .efficientvit import EfficientViT
from .necks import EfficientViTFPN
from .shvit import SHViT

__all__ = ['EfficientViT', 'EfficientViTFPN', 'SHViT']
