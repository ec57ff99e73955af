"""Load mmengine checkpoints with torch's ``weights_only=True`` kept on.

mmengine 0.10.7 pickles a few of its own objects into checkpoints: the message hub's
``HistoryBuffer`` and numpy arrays and scalars in ``meta``; torch >= 2.6 refuses them under
``weights_only=True``. We allow-list exactly those classes instead of turning the check off
(turning ``weights_only`` off lets a checkpoint file run arbitrary code).

``HistoryBuffer.__getstate__`` also stores its statistics *functions* (``min``, ``max``,
``mean``, ``current``), which pickle as ``getattr(HistoryBuffer, 'min')``. Allow-listing
``getattr`` would let a checkpoint call any attribute of any allow-listed object, so instead
we save those four defaults by omission: ``__setstate__`` restores them anyway.

:func:`register_safe_checkpoint_loader` makes mmengine's own loads pass
``weights_only=True`` explicitly (see there), and :func:`load_checkpoint_file` is the one
load function for our tools, with errors that say what is wrong with a file.

Nothing here runs on import: :func:`enable_safe_checkpoints` (called by
:func:`mmdeblora.utils.register_all_modules`, which our tools call first, and by importing
``mmdeblora.safe_loading``) installs both.
"""
import os
import os.path as osp
import pickle
import re
import zipfile
from contextlib import contextmanager
from typing import Any, Callable, List

import numpy as np
import torch

_FORCE, _FORCE_NO = 'TORCH_FORCE_WEIGHTS_ONLY_LOAD', 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'


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


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot or must not be loaded; the message names the file."""


def _file_size(path: str, kind: str) -> int:
    """The size of the file ``path``; refuses a missing or empty one, naming it."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{kind} {path!r} does not exist')
    size = osp.getsize(path)
    if size == 0:
        raise CheckpointFileError(f'{kind} {path!r} is empty (0 bytes): an interrupted '
                                  'save or copy?')
    return size


def _explain(path: str, size: int, err: BaseException) -> str:
    """What is wrong with the file, in a sentence, instead of torch's own advice (which,
    for an unsafe file, is to switch ``weights_only`` off)."""
    msg = str(err)
    found = re.search(r'GLOBAL ([\w.]+)', msg)
    if found:
        return (f'checkpoint {path!r} refers to {found.group(1)!r}, which is neither a tensor '
                'nor plain data; unpickling it could run code, so it is refused. Use only '
                'checkpoints written by torch.save of state dicts from a source you trust')
    if isinstance(err, EOFError) or 'Ran out of input' in msg:
        reason = 'it ends early (an interrupted save or copy?)'
    elif 'central directory' in msg or 'zip archive' in msg:
        reason = 'its zip archive is damaged or cut short (an interrupted save or copy?)'
    elif 'Unsupported operand' in msg or 'invalid load key' in msg:
        op = re.search(r'Unsupported operand \d+|invalid load key, [^.]*', msg)
        reason = ('its bytes are not a torch.save file (random bytes, another format, or '
                  f'a plain pickle: {op.group(0) if op else "unknown opcode"})')
    else:
        reason = f'{type(err).__name__}: {msg.splitlines()[0][:200] if msg else ""}'
    return f'{path!r} ({size} bytes) is not a readable PyTorch checkpoint: {reason}'


def load_checkpoint_file(path: str, map_location: Any = 'cpu') -> Any:
    """``torch.load(path, weights_only=True)`` whatever the environment says.

    torch honours ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` (set to 1) only where the caller leaves
    ``weights_only`` unset, as mmengine's loaders do; passing it explicitly keeps a
    malicious checkpoint from running code even then. Errors name the file and say what
    is wrong with it (empty, cut short, not a checkpoint, refers to code) and never suggest
    switching the check off. mmengine's checkpoint contents (:func:`checkpoint_safe_globals`)
    are allowed for this load only, whether or not :func:`enable_safe_checkpoints` ran.
    """
    path = osp.expanduser(path)
    size = _file_size(path, 'checkpoint')
    try:
        # only what is not allow-listed already: torch's context manager removes on exit
        # what it was given, so passing a registered global would un-register it
        have = torch.serialization.get_safe_globals()
        extra = [g for g in checkpoint_safe_globals() if g not in have]
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, OSError,
            zipfile.BadZipFile, UnicodeDecodeError) as err:
        raise CheckpointFileError(_explain(path, size, err)) from None


def load_safetensors_file(path: str) -> dict:
    """``safetensors.torch.load_file(path)`` with errors that name the file and say what
    is wrong with it (safetensors' own say "header too large" and no file name)."""
    from safetensors.torch import load_file
    path = osp.expanduser(path)
    size = _file_size(path, 'safetensors file')
    try:
        return load_file(path, device='cpu')
    except Exception as err:  # safetensors raises its own SafetensorError, not exported
        raise CheckpointFileError(
            f'{path!r} ({size} bytes) is not a readable safetensors file: {err} (cut '
            'short, or another format under a .safetensors name?)') from None


def load_weights_file(path: str) -> dict:
    """A state dict from a ``.safetensors`` file or a torch / mmengine checkpoint (its
    ``state_dict`` if it has one), read without code execution (:func:`load_checkpoint_file`,
    :func:`load_safetensors_file`). For weights a model reads itself, before or outside
    mmengine's loader (``LoRABackbone(pretrained=...)``, SDBackbone's single file)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'weights file {path!r} does not exist')
    if path.endswith('.safetensors'):
        return load_safetensors_file(path)
    ckpt = load_checkpoint_file(path)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict):
        raise TypeError(f'{path!r} holds a {type(ckpt).__name__}, not a state dict')
    return ckpt


def load_from_local_weights_only(filename: str, map_location: Any = None) -> Any:
    """mmengine's local ``CheckpointLoader`` scheme, with :func:`load_checkpoint_file`."""
    return load_checkpoint_file(filename, map_location)


@contextmanager
def _forced_weights_only():
    """Make every ``torch.load`` inside load weights only (torch's own switch for that)."""
    saved = {k: os.environ.get(k) for k in (_FORCE, _FORCE_NO)}
    os.environ[_FORCE] = '1'
    os.environ.pop(_FORCE_NO, None)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _weights_only_scheme(loader: Callable) -> Callable:
    def load(filename, map_location=None, *args, **kwargs):
        with _forced_weights_only():
            return loader(filename, map_location, *args, **kwargs)
    load.__name__ = loader.__name__  # mmengine logs the scheme from the loader's name
    load.weights_only = True
    return load


def register_safe_checkpoint_loader() -> None:
    """Route every mmengine checkpoint load (runner checkpoints, ``load_from``,
    ``--resume``, ``init_cfg=dict(type='Pretrained')``, tools) through weights-only loads.

    mmengine's ``CheckpointLoader`` calls ``torch.load`` without ``weights_only``, so
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` set to 1 in the environment would let a checkpoint run
    code. Local files (the only kind reachable here) get :func:`load_checkpoint_file`; the
    download schemes keep their loader, run with torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``
    switch set for the duration of the call. Idempotent.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if prefix != '' and not getattr(loader, 'weights_only', False):
            CheckpointLoader.register_scheme(prefix, _weights_only_scheme(loader), force=True)
    CheckpointLoader.register_scheme('', load_from_local_weights_only, force=True)


def safe_checkpoint_loader_installed() -> bool:
    """Whether mmengine's local checkpoint scheme is :func:`load_from_local_weights_only`."""
    from mmengine.runner.checkpoint import CheckpointLoader
    return CheckpointLoader._schemes.get('') is load_from_local_weights_only


def enable_safe_checkpoints() -> None:
    """Weights-only checkpoint loading for the whole process: mmengine's contents
    allow-listed (:func:`register_checkpoint_safe_globals`) and every mmengine load routed
    through weights-only loads (:func:`register_safe_checkpoint_loader`). Idempotent; what
    ``register_all_modules(safe_checkpoints=True)`` and ``mmdeblora.safe_loading`` call."""
    register_checkpoint_safe_globals()
    register_safe_checkpoint_loader()
