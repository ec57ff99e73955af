"""Load mmengine checkpoints with torch's ``weights_only=True`` kept on.

mmengine 0.10.7 pickles a few of its own objects into checkpoints: the message hub's
``HistoryBuffer`` and numpy arrays and scalars in ``meta``; torch >= 2.6 refuses them under
``weights_only=True``. We allow-list exactly those classes instead of turning the check off
(turning ``weights_only`` off lets a checkpoint file run arbitrary code).

``HistoryBuffer.__getstate__`` also stores its statistics *functions* (``min``, ``max``,
``mean``, ``current``), which pickle as ``getattr(HistoryBuffer, 'min')``. Allow-listing
``getattr`` would let a checkpoint call any attribute of any allow-listed object, so instead
we save those four defaults by omission: ``__setstate__`` restores them anyway.
"""
from typing import List

import numpy as np
import torch


def _numpy_globals() -> List:
    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    found = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    # numpy >= 1.25 pickles dtypes as instances of their per-type classes
    found += [type(np.dtype(t)) for t in
              (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
               np.uint8, np.bool_)]
    return found


def checkpoint_safe_globals() -> List:
    """The classes and functions that mmengine checkpoints need to unpickle."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, *_numpy_globals()]


def _history_buffer_getstate(self) -> dict:
    """Like upstream, without the default statistics functions (restored on load)."""
    defaults = {name: getattr(type(self), name) for name in
                ('min', 'max', 'current', 'mean')}
    state = dict(self.__dict__)
    state['statistics_methods'] = {
        k: v for k, v in self._statistics_methods.items() if defaults.get(k) is not v}
    return state


def register_checkpoint_safe_globals() -> None:
    """Allow-list mmengine's checkpoint contents for ``torch.load(weights_only=True)``."""
    from mmengine.logging.history_buffer import HistoryBuffer
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(checkpoint_safe_globals())
