"""The base parameters a ``LoRABackbone`` trains besides its adapters (``trainable_extra``).

peft's ``set_adapter`` / ``set_requires_grad`` handle the adapter tensors only, so the base
parameters get ``requires_grad`` here: regexes (``re.fullmatch``) of their names, e.g.
``r'.*bn\\d*\\..*'`` for norms, matched with and without the ``.base_layer.`` that peft adds
to a wrapped layer's names.
"""
import re
from typing import Container, Dict, Sequence

import torch.nn as nn

from .adapter_io import adapter_of_key


def is_extra(name: str, patterns: Sequence[re.Pattern]) -> bool:
    plain = name.replace('.base_layer.', '.')
    return any(p.fullmatch(name) or p.fullmatch(plain) for p in patterns)


def check_extra(patterns: Sequence[re.Pattern], base: nn.Module) -> None:
    """A pattern that matches no parameter of ``base`` is an error (a typo trains nothing)."""
    names = [n for n, _ in base.named_parameters()]
    for pat in patterns:
        if not any(is_extra(n, [pat]) for n in names):
            raise ValueError(f'trainable_extra pattern {pat.pattern!r} matches no parameter '
                             f'of {type(base).__name__}, e.g. {names[:8]}')


def mark_extra(base: nn.Module, patterns: Sequence[re.Pattern]) -> None:
    """Every base (non-adapter) parameter trains iff it matches (a walk over all of them)."""
    for name, param in base.named_parameters():
        if adapter_of_key(name) is None:
            param.requires_grad_(is_extra(name, patterns))


def count_trainable(base: nn.Module, adapters: Container[str]) -> Dict[str, int]:
    """Trainable parameter counts, ``adapters`` the adapter names:
    ``{'adapters': n, 'extra': m, 'total': n + m}``."""
    counts = dict(adapters=0, extra=0)
    for name, p in base.named_parameters():
        if p.requires_grad:
            counts['adapters' if adapter_of_key(name) in adapters else 'extra'] += p.numel()
    counts['total'] = counts['adapters'] + counts['extra']
    return counts
