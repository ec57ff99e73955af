"""DOTA-v1.0 class names, the seed paper's head / middle / tail grouping, and the one
group resolver that every consumer (class statistics, losses, ResLT, the de-biasing
step, the metrics) calls.

One spelling for a group specification (``GroupSpec``):

- ``'dota'``: the seed paper's DOTA grouping, restricted to the classes at hand;
- ``'auto'``: from the classes' shares of training instances (``groups_from_counts``);
- a dict ``{'head': [...], 'middle': [...], 'tail': [...]}`` of class names.
"""
import logging
from typing import Dict, List, Optional, Sequence, Union

from mmengine.logging import print_log

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


def check_groups_cover(groups: Dict[str, Sequence[str]], classes: Sequence[str],
                       counts: Optional[Sequence[int]] = None,
                       spec: Optional[GroupSpec] = None, key: str = 'groups') -> None:
    """Raise if a class is in no group or a group of a named spec is empty; warn for an
    empty ``'auto'`` group and for a tail class with no training instance (``counts`` in
    class order, when known).

    Why: a class in no group counts in no group score, and an empty group's score is
    ``nan``; ``'dota'`` on classes that are not DOTA's names gave both without a word.
    ``'auto'`` puts every class in a group; that the data fill no share band (a toy set
    without tail) is a fact about the data, not a wrong spec, hence only a warning.
    """
    what = f'{key}={spec!r}' if isinstance(spec, str) else key
    ungrouped = [c for c in classes if not any(c in names for names in groups.values())]
    empty = [g for g in GROUP_NAMES if not groups.get(g)]
    if ungrouped or (empty and spec != 'auto'):
        problems = []
        if ungrouped:
            problems.append(f'class(es) {ungrouped} are in no group')
        if empty:
            problems.append(f'group(s) {empty} are empty')
        hint = " ('dota' knows only the 15 DOTA-v1.0 class names)" if spec == 'dota' else ''
        raise ValueError(
            f'{what} does not fit the data set\'s classes {list(classes)}: '
            f'{"; ".join(problems)}{hint}. Give every class a group and every group a '
            f"class: {key}=dict(head=[...], middle=[...], tail=[...])")
    if empty:
        print_log(f'{what}: no class falls in group(s) {empty} (group_thresholds '
                  f'{DEFAULT_GROUP_THRESHOLDS} by default); their scores will be nan',
                  logger='current', level=logging.WARNING)
    if counts is not None:
        unseen = [c for c, n in zip(classes, counts) if n == 0 and c in groups.get('tail', ())]
        if unseen:
            print_log(f'{what}: tail class(es) {unseen} have no training instance; they '
                      'count in the tail score with whatever the model does without '
                      'having seen them', logger='current', level=logging.WARNING)


def resolve_groups(classes: Sequence[str], counts: Optional[Sequence[int]] = None,
                   spec: GroupSpec = 'dota',
                   thresholds: Optional[Dict[str, float]] = None,
                   key: str = 'groups') -> Dict[str, List[str]]:
    """Head / middle / tail class names for ``classes`` (all three keys, checked).

    ``counts`` (training instances per class, in class order) are needed for ``'auto'``
    only. Every class must be in a group and every group must have a class
    (``check_groups_cover``, which names ``key``).
    """
    check_group_spec(spec, key)
    if spec == 'auto':
        if counts is None:
            raise ValueError("groups='auto' needs the per-class training counts")
        out = groups_from_counts(classes, counts, thresholds)
    elif spec == 'dota':
        out = {g: [c for c in names if c in classes] for g, names in DOTA_GROUPS.items()}
    else:
        out = {g: list(spec.get(g, [])) for g in GROUP_NAMES}
    check_groups(out, classes)
    check_groups_cover(out, classes, counts, spec, key)
    return out


def group_indices(groups: Dict[str, Sequence[str]],
                  classes: Sequence[str]) -> Dict[str, List[int]]:
    """Groups as class indices (what heads and losses need)."""
    index = {c: i for i, c in enumerate(classes)}
    return {g: [index[c] for c in names] for g, names in groups.items()}
