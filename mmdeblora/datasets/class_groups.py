"""DOTA-v1.0 class names and the seed paper's head / middle / tail grouping."""
from typing import Dict, List, Optional, Sequence

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


def groups_from_counts(classes: Sequence[str],
                       counts: Sequence[int],
                       thresholds: Optional[Dict[str, float]] = None
                       ) -> Dict[str, List[str]]:
    """Split classes into head / middle / tail by their share of training instances."""
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
