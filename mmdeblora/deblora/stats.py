"""Feature-space statistics of the paper's analysis (cosine geometry).

- ``head_tail``: mean cosine distance between a head class centroid and a tail one;
- ``tail_tail``: mean cosine distance between two different tail class centroids;
- ``intra_tail``: mean over tail classes of the mean cosine distance of their instances
  to their own centroid.
A representation biased toward the head squeezes tail classes together (small
tail-tail) and close to the head (small head-tail); classes without instances are left out.
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def class_centroids(z: Tensor, labels: Tensor, num_classes: int):
    """Mean feature per class [C, D] and the instance count per class [C]."""
    counts = torch.bincount(labels, minlength=num_classes)
    sums = torch.zeros(num_classes, z.shape[1], dtype=z.dtype,
                       device=z.device).index_add_(0, labels, z)
    return sums / counts.clamp(min=1)[:, None].to(z), counts


def _mean_pair_distance(cents: Tensor, a: Sequence[int], b: Sequence[int],
                        distinct: bool) -> float:
    if not len(a) or not len(b):
        return float('nan')
    ca = F.normalize(cents[list(a)], dim=1)
    cb = F.normalize(cents[list(b)], dim=1)
    d = 1 - ca @ cb.T
    if distinct:  # a == b: off-diagonal pairs only
        if len(a) < 2:
            return float('nan')
        mask = ~torch.eye(len(a), dtype=torch.bool, device=d.device)
        return float(d[mask].mean())
    return float(d.mean())


def feature_stats(z: Tensor, labels: Tensor, class_names: Sequence[str],
                  groups: Dict[str, Sequence[str]]) -> Dict[str, float]:
    """head_tail, tail_tail and intra_tail cosine distances (NaN when undefined)."""
    z = z.double()
    labels = labels.to(z.device).long()
    cents, counts = class_centroids(z, labels, len(class_names))
    index = {n: i for i, n in enumerate(class_names)}

    def present(group: str):
        return [index[n] for n in groups.get(group, ()) if n in index and
                counts[index[n]] > 0]

    head, tail = present('head'), present('tail')
    intra = []
    for c in tail:
        zc = F.normalize(z[labels == c], dim=1)
        intra.append(float((1 - zc @ F.normalize(cents[c], dim=0)).mean()))
    return dict(head_tail=_mean_pair_distance(cents, head, tail, False),
                tail_tail=_mean_pair_distance(cents, tail, tail, True),
                intra_tail=float(sum(intra) / len(intra)) if intra else float('nan'))
