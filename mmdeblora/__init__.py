"""mmdeblora: de-biased LoRA for long-tailed remote-sensing detection.

Importing the package registers every component into mmrotate's / mmdet's registries
(the subpackages are imported eagerly, so ``custom_imports=dict(imports=['mmdeblora'])``
is enough) and exports the public names of its subpackages, e.g.
``from mmdeblora import LoRABackbone, DebLoRAHook, ECMLoss, GroupDOTAMetric``.
"""
from types import ModuleType
from typing import Iterator

from . import datasets, engine, evaluation, models, utils
from .models import DebiasMixin, DebiasModel
from .utils import register_checkpoint_safe_globals, register_safe_checkpoint_loader
from .version import __version__, version_info

# every checkpoint load through mmengine is weights-only, whatever the environment says
register_checkpoint_safe_globals()
register_safe_checkpoint_loader()


def _public_modules() -> Iterator[ModuleType]:
    """Subpackages whose ``__all__`` is re-exported here; a new ``models.<x>`` subpackage
    (or a name added to an ``__all__``) is exported without touching this file."""
    yield from (datasets, engine, engine.hooks, evaluation, utils)
    for sub in vars(models).values():
        if isinstance(sub, ModuleType) and sub.__name__.startswith('mmdeblora.models.'):
            yield sub


__all__ = ['__version__', 'version_info', 'DebiasMixin', 'DebiasModel']
for _module in _public_modules():
    for _name in getattr(_module, '__all__', ()):
        if _name not in __all__:
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
del _module, _name
