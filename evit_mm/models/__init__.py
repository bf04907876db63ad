from .efficientvit import EfficientViT
from .shvit import SHViT

__all__ = ['EfficientViT', 'SHViT']
