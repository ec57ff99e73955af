from .level_pooling import LevelPooling

__all__ = ['LevelPooling']
