"""A seeded, class-stratified train / validation split that keeps source images whole.

Why whole images: split DOTA cuts each original image into overlapping patches
(``P0004__1024__0___0``), so one object can sit in several patches; an instance-level split
would put the same object in training and validation. All crops of one original image
(the name before ``__``) go to the same side.

Rare classes are served first: for each class, from rarest to most frequent, images
holding it are moved (in seeded random order) to validation until the class has its share,
skipping an image that would take the counts of all classes further from their shares
(images hold several classes) or leave a class without training data.
"""
from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np


def source_image(img_id: str) -> str:
    """The original image of a split-DOTA patch name (``P0004__1024__0___0`` -> ``P0004``)."""
    return img_id.split('__')[0]


def _deviation(have: np.ndarray, target: np.ndarray) -> float:
    """Squared relative distance of the validation counts from their targets."""
    return float((((have - target) / np.maximum(target, 1)) ** 2).sum())


def stratified_group_split(labels: Sequence[int], groups: Sequence[str], fraction: float,
                           seed: int = 0) -> np.ndarray:
    """Boolean mask of the items that go to validation.

    Args:
        labels: class index per item.
        groups: group key per item (items of one group are never split).
        fraction: target share of every class in validation, in (0, 1).
        seed: the random order of images per class.
    """
    if not 0 < fraction < 1:
        raise ValueError(f'val_fraction must be in (0, 1), got {fraction}')
    labels = np.asarray(labels)
    if len(labels) != len(groups):
        raise ValueError(f'{len(labels)} labels but {len(groups)} groups')
    members: Dict[str, List[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    group_names = sorted(members)
    counts = {g: np.bincount(labels[members[g]], minlength=labels.max() + 1)
              for g in group_names}
    totals = np.bincount(labels, minlength=labels.max() + 1)
    target = np.floor(totals * fraction + 0.5)
    rng = np.random.RandomState(seed)
    in_val: Dict[str, bool] = {}
    have = np.zeros_like(totals, dtype=np.float64)
    for c in np.argsort(totals, kind='stable'):
        if totals[c] == 0:
            continue
        cand = [g for g in group_names if counts[g][c] > 0 and g not in in_val]
        for j in rng.permutation(len(cand)):
            if have[c] >= target[c]:
                break
            g = cand[j]
            # keep at least one training image of every class the group holds
            left = totals - have - counts[g]
            if np.any((counts[g] > 0) & (left <= 0)):
                continue
            # and take a group only if it brings the shares closer to their targets
            if _deviation(have + counts[g], target) >= _deviation(have, target):
                continue
            in_val[g] = True
            have += counts[g]
    mask = np.zeros(len(labels), dtype=bool)
    for g in in_val:
        mask[members[g]] = True
    return mask
