"""mmdeblora: de-biased LoRA for long-tailed remote-sensing detection.

Importing the package registers every component into mmrotate's / mmdet's registries.
"""
from .version import __version__  # noqa: F401
from . import datasets, engine, evaluation, models  # noqa: F401
from .utils import register_checkpoint_safe_globals

register_checkpoint_safe_globals()

__all__ = ['__version__']
