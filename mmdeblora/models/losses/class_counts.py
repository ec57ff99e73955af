"""Checking the ``class_counts`` argument shared by the long-tail losses and heads."""
from typing import List, Optional, Sequence, Union

CountsArg = Union[str, Sequence[int]]

AUTO_HINT = ("class_counts='auto' is filled in before training by ClassStatsHook: add "
             "custom_hooks=[dict(type='ClassStatsHook')] to the config, or give the "
             'per-class training instance counts as a list')


def check_counts_arg(class_counts: CountsArg) -> Optional[List[int]]:
    """``None`` for ``'auto'`` (set later through ``set_class_counts``), else the list."""
    if isinstance(class_counts, str):
        if class_counts != 'auto':
            raise ValueError(f"class_counts must be 'auto' or a list, got {class_counts!r}")
        return None
    return as_counts(class_counts)


def as_counts(counts: Sequence[int], num_classes: Optional[int] = None) -> List[int]:
    """Validate counts: non-negative, not all zero, ``num_classes`` long when given."""
    counts = [int(n) for n in counts]
    if num_classes is not None and len(counts) != num_classes:
        raise ValueError(f'{len(counts)} class counts for {num_classes} classes')
    if any(n < 0 for n in counts):
        raise ValueError(f'class counts must be >= 0, got {counts}')
    if sum(counts) == 0:
        raise ValueError('every class count is zero: no training instances to weight by')
    return counts
