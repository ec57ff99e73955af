"""DOTA-v1.0 class names, the seed paper's head / middle / tail grouping, and the one
group resolver that every consumer (class statistics, losses, ResLT, the de-biasing
step, the metrics) calls.

One spelling for a group specification (``GroupSpec``):

- ``'dota'``: the seed paper's DOTA grouping, restricted to the classes at hand;
- ``'auto'``: from the classes' shares of training instances (``groups_from_counts``);
- a dict ``{'head': [...], 'middle': [...], 'tail': [...]}`` of class names.
"""
from typing import Dict, List, Optional, Sequence, Union

DOTA_CLASSES = ('plane', 'baseball-diamond', 'bridge', 'ground-track-field',
                'small-vehicle', 'large-vehicle', 'ship', 'tennis-court',
                'basketball-court', 'storage-tank', 'soccer-ball-field',
                'roundabout', 'harbor', 'swimming-pool', 'helicopter')

# Grouping used by debLoRA (NeurIPS 2024) for DOTA.
DOTA_GROUPS: Dict[str, List[str]] = dict(
    head=['ship', 'small-vehicle', 'large-vehicle', 'plane'],
    middle=['harbor', 'storage-tank', 'tennis-court', 'bridge', 'swimming-pool'],
    tail=['helicopter', 'basketball-court', 'baseball-diamond', 'roundabout',
          'soccer-ball-field', 'ground-track-field'],
)

# Thresholds used when groups are derived from counts: a class is head when it holds at
# least ``head`` of all training instances, tail when it holds less than ``tail``.
DEFAULT_GROUP_THRESHOLDS = dict(head=0.10, tail=0.01)

GROUP_NAMES = ('head', 'middle', 'tail')
GROUP_SPECS = ('dota', 'auto')

GroupSpec = Union[str, Dict[str, Sequence[str]]]


def groups_from_counts(classes: Sequence[str],
                       counts: Sequence[int],
                       thresholds: Optional[Dict[str, float]] = None
                       ) -> Dict[str, List[str]]:
    """Split classes into head / middle / tail by their share of training instances."""
    unknown = set(thresholds or {}) - {'head', 'tail'}
    if unknown:
        raise ValueError(f'unknown group threshold keys {sorted(unknown)}; '
                         "use 'head' and 'tail'")
    thr = dict(DEFAULT_GROUP_THRESHOLDS, **(thresholds or {}))
    if not thr['tail'] <= thr['head']:
        raise ValueError(f'group thresholds need tail <= head, got {thr}')
    if len(classes) != len(counts):
        raise ValueError(f'{len(classes)} classes but {len(counts)} counts')
    total = max(sum(counts), 1)
    groups: Dict[str, List[str]] = {g: [] for g in GROUP_NAMES}
    for name, n in zip(classes, counts):
        share = n / total
        key = 'head' if share >= thr['head'] else 'tail' if share < thr['tail'] \
            else 'middle'
        groups[key].append(name)
    return groups


def check_groups(groups: Dict[str, Sequence[str]], classes: Sequence[str]) -> None:
    """Raise if a group names an unknown class or a class sits in two groups."""
    seen: Dict[str, str] = {}
    for g, names in groups.items():
        for name in names:
            if name not in classes:
                raise ValueError(f'group {g!r} names unknown class {name!r}; '
                                 f'classes are {list(classes)}')
            if name in seen:
                raise ValueError(f'class {name!r} is in groups {seen[name]!r} and {g!r}')
            seen[name] = g


def check_group_spec(spec: GroupSpec, key: str = 'groups') -> None:
    """Validate a spec's form (not its class names), naming the config ``key``.

    Lets a component fail at build time, before any data is read.
    """
    if isinstance(spec, str):
        if spec not in GROUP_SPECS:
            raise ValueError(f'{key} must be one of {GROUP_SPECS} or a dict of class '
                             f'names per group, got {spec!r}')
        return
    if not isinstance(spec, dict):
        raise TypeError(f'{key} must be one of {GROUP_SPECS} or a dict, got '
                        f'{type(spec).__name__}')
    unknown = set(spec) - set(GROUP_NAMES)
    if unknown:
        raise ValueError(f'{key} has unknown group names {sorted(unknown)}; use '
                         f'{list(GROUP_NAMES)}')
    for g, names in spec.items():
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise TypeError(f'{key}.{g} must be a list of class names, got {names!r}')


def resolve_groups(classes: Sequence[str], counts: Optional[Sequence[int]] = None,
                   spec: GroupSpec = 'dota',
                   thresholds: Optional[Dict[str, float]] = None) -> Dict[str, List[str]]:
    """Head / middle / tail class names for ``classes`` (all three keys, checked).

    ``counts`` (training instances per class, in class order) are needed for ``'auto'``
    only. Classes in no group are allowed (they are reported in no group).
    """
    check_group_spec(spec)
    if spec == 'auto':
        if counts is None:
            raise ValueError("groups='auto' needs the per-class training counts")
        out = groups_from_counts(classes, counts, thresholds)
    elif spec == 'dota':
        out = {g: [c for c in names if c in classes] for g, names in DOTA_GROUPS.items()}
    else:
        out = {g: list(spec.get(g, [])) for g in GROUP_NAMES}
    check_groups(out, classes)
    return out


def group_indices(groups: Dict[str, Sequence[str]],
                  classes: Sequence[str]) -> Dict[str, List[int]]:
    """Groups as class indices (what heads and losses need)."""
    index = {c: i for i, c in enumerate(classes)}
    return {g: [index[c] for c in names] for g, names in groups.items()}
