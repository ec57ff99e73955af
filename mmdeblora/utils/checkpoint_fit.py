"""Does a checkpoint fit a model? Count what really loads.

mmengine's ``load_state_dict(strict=False)`` (what ``load_from``, ``--resume`` and
``tools/test.py`` use) only *warns* about missing and unexpected keys and about tensors
whose shape differs, and then goes on: a checkpoint of which no key matches, or whose
class head has another size, evaluates or trains as if it fitted. :func:`checkpoint_fit`
compares a state dict with a model and :class:`CheckpointFit` says, in one line, what
loaded and what did not, so that a caller can refuse.
"""
import re
from dataclasses import dataclass, field
from typing import Iterable, List, Mapping, Sequence, Tuple

import torch.nn as nn

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
