"""mmdeblora: de-biased LoRA for long-tailed remote-sensing detection.

Importing the package registers every component into mmrotate's / mmdet's registries
(the subpackages are imported eagerly, so ``custom_imports=dict(imports=['mmdeblora'])``
is enough) and exports the public names of its subpackages, e.g.
``from mmdeblora import LoRABackbone, DebLoRAHook, ECMLoss, GroupDOTAMetric``. It changes
nothing else: safe (weights-only) checkpoint loading is one explicit call,
:func:`mmdeblora.utils.register_all_modules` (or ``mmdeblora.safe_loading`` in
``custom_imports``).
"""
from types import ModuleType
from typing import Iterator

from . import datasets, engine, evaluation, models, utils
from .models import DebiasMixin, DebiasModel
from .version import __version__, version_info


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
