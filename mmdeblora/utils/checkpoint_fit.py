"""Does a checkpoint fit a model? Count what really loads.

mmengine's ``load_state_dict(strict=False)`` (what ``load_from``, ``--resume`` and
``tools/test.py`` use) only *warns* about missing and unexpected keys and about tensors
whose shape differs, and then goes on: a checkpoint of which no key matches, or whose
class head has another size, evaluates or trains as if it fitted. :func:`checkpoint_fit`
compares a state dict with a model and :class:`CheckpointFit` says, in one line, what
loaded and what did not, so that a caller can refuse; :func:`load_pretrained` loads a
weights file into a module only where it fits.
"""
import logging
import re
from dataclasses import dataclass, field
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.logging import print_log

from .checkpoint import load_weights_file

EXTRA_STATE = '_extra_state'  # nn.Module.get_extra_state(): not a tensor of fixed shape
_SHOWN = 5


class CheckpointMismatchError(RuntimeError):
    """A checkpoint that does not fit the model it is loaded into."""


@dataclass
class CheckpointFit:
    """Keys of a checkpoint compared with a model's ``state_dict()``."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)
    omitted: List[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Model tensors compared (declared omissions and BN batch counters excluded)."""
        return len(self.loaded) + len(self.missing) + len(self.mismatched)

    @property
    def fits(self) -> bool:
        return bool(self.loaded) and not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        def some(keys: Sequence[str]) -> str:
            more = f', ... ({len(keys) - _SHOWN} more)' if len(keys) > _SHOWN else ''
            return ', '.join(keys[:_SHOWN]) + more

        parts = [f'{len(self.loaded)} of {self.total} model tensors loaded']
        if self.omitted:
            parts.append(f'{len(self.omitted)} left out on purpose by the checkpoint')
        if self.mismatched:
            parts.append(f'{len(self.mismatched)} with another shape (' + some(
                [f'{k}: checkpoint {tuple(c)} vs model {tuple(m)}'
                 for k, c, m in self.mismatched]) + ')')
        if self.missing:
            parts.append(f'{len(self.missing)} missing from the checkpoint ('
                         + some(self.missing) + ')')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} checkpoint tensors the model does not '
                         'have (' + some(self.unexpected) + ')')
        return '; '.join(parts)


def _is_omitted(key: str, omitted: Iterable[str]) -> bool:
    return any(key == o or (o.endswith('.') and key.startswith(o)) for o in omitted)


def checkpoint_fit(model: nn.Module, state_dict: Mapping, omitted: Sequence[str] = (),
                   revise_keys: Sequence[Tuple[str, str]] = ()) -> CheckpointFit:
    """Compare ``state_dict`` with ``model.state_dict()``, key by key and shape by shape.

    Call it *after* loading when loading changes the model's keys (``LoRABackbone`` creates
    the adapters a checkpoint names in ``set_extra_state``; the debLoRA hook re-enters stage
    2 before the state dict loads): then the model's keys are those it ended with.

    Args:
        model: the model (unwrapped).
        state_dict: the checkpoint's tensors.
        omitted: keys (or prefixes ending in ``.``) that the checkpoint leaves out on
            purpose, e.g. a frozen base rebuilt from ``pretrained``; not counted missing.
        revise_keys: ``(pattern, replacement)`` applied to checkpoint keys first, as
            mmengine's loader does (``^module\\.`` -> ``''``).
    """
    ckpt = {}
    for key, value in state_dict.items():
        for pattern, repl in revise_keys:
            key = re.sub(pattern, repl, key)
        ckpt[key] = value
    fit = CheckpointFit()
    own = model.state_dict()
    for key, value in own.items():
        if key.endswith('num_batches_tracked'):  # a counter; old checkpoints lack it
            continue
        if key not in ckpt:
            (fit.omitted if _is_omitted(key, omitted) else fit.missing).append(key)
        elif key.endswith(EXTRA_STATE) or not hasattr(ckpt[key], 'shape'):
            fit.loaded.append(key)
        elif tuple(ckpt[key].shape) != tuple(value.shape):
            fit.mismatched.append((key, tuple(ckpt[key].shape), tuple(value.shape)))
        else:
            fit.loaded.append(key)
    fit.unexpected = [k for k in ckpt if k not in own]
    return fit


def load_pretrained(module: nn.Module, path: str, prefix: Optional[str] = 'backbone.',
                    strict: bool = True, owner: str = 'LoRABackbone') -> List[str]:
    """Load the tensors of the weights file ``path`` that fit ``module``; returns their keys.

    Keys under ``prefix`` are taken (prefix stripped) when the file has any. Counts only what
    really loaded: a tensor of another shape is a misfit, not "loaded", as are module tensors
    the file lacks; misfits are an error unless ``strict`` is False (then a warning with the
    counts). File tensors the module has no place for (torchvision's ``fc``) are reported.
    """
    state = load_weights_file(path)
    if prefix and any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own, name = module.state_dict(), type(module).__name__
    if not set(own) & set(state):
        raise KeyError(f'pretrained={path!r} shares no key with {name} (checkpoint keys e.g. '
                       f'{sorted(state)[:5]}, model keys e.g. {sorted(own)[:5]}); check '
                       'pretrained_prefix')
    fits = {k: v for k, v in state.items()
            if k in own and tuple(v.shape) == tuple(own[k].shape)}
    wrong = [f'{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the '
             'model' for k in state if k in own and k not in fits]
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unused = [k for k in state if k not in own]
    if (wrong or missing) and strict:
        raise ValueError(
            f'pretrained={path!r} does not fit {name}: {len(wrong)} tensor(s) of another '
            f'shape (e.g. {wrong[:3]}), {len(missing)} backbone tensor(s) missing from the '
            f'file (e.g. {missing[:3]}). Another architecture? Fix the backbone or the file, '
            'or set pretrained_strict=False to load only the tensors that fit')
    result = module.load_state_dict(fits, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    level = logging.WARNING if wrong or missing else logging.INFO
    print_log(f'{owner}: loaded {len(fits)}/{len(own)} {name} tensors from {path}'
              + (f'; NOT loaded: {len(wrong)} of another shape, {len(missing)} missing '
                 '(left as initialised)' if wrong or missing else '')
              + (f'; {len(unused)} file tensor(s) unused (e.g. {unused[:3]})'
                 if unused else ''), logger='current', level=level)
    return sorted(fits)
