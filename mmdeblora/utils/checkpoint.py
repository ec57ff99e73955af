"""Load mmengine checkpoints with torch's ``weights_only=True`` kept on.

mmengine 0.10.7 pickles a few of its own objects (the message hub's ``HistoryBuffer``,
numpy scalars and arrays in ``meta``) into checkpoints; torch >= 2.6 refuses them under
``weights_only=True``. We allow-list exactly those classes instead of turning the check off
(``weights_only=False`` lets a checkpoint file run arbitrary code).
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


def register_checkpoint_safe_globals() -> None:
    """Allow-list mmengine's checkpoint contents for ``torch.load(weights_only=True)``."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(checkpoint_safe_globals())
