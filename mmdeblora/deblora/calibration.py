"""De-biased class centers, per-class alpha and calibrated feature targets.

n_kc = instances of class c in cluster k, n_k = size of cluster k. The de-biased center of
class c is h_c = sum_k w_kc mu_k with sum_k w_kc = 1:

- ``class_share``: w_kc proportional to n_kc (the clusters where c's samples fall);
- ``balanced``:    w_kc proportional to n_kc / n_k (a cluster filled with head samples
  weighs less, so h_c moves toward the clusters that are "c's own");
- ``top_cluster``: w_kc = 1 for the cluster that holds most of class c's instances (ties:
  the lowest index), 0 elsewhere: h_c is that cluster's center. The official scripts
  calibrate toward one hand-picked cluster; this picks it by rule.

A calibrated instance z of class c gets the target z_hat = (1 - alpha_c) z + alpha_c h_c,
put back on the unit sphere when the features are L2-normalised (``renormalize``): h_c is a
convex mix of K-means centers of unit vectors, so its norm is below 1 and the plain mix is
a point that no normalised feature can reach (measured: a loss floor of 6-30 % of the
calibration gap). On the sphere ``||z - z_hat||^2 = 2 - 2 cos(z, z_hat)``: the feature loss
is then a cosine loss.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

WEIGHTINGS = ('class_share', 'balanced', 'top_cluster')
ALPHA_MODES = ('fixed', 'imbalance')


def count_matrix(cluster_labels: Tensor, class_labels: Tensor, num_clusters: int,
                 num_classes: int) -> Tensor:
    """The cluster x class count matrix n_kc [K, C] (int64)."""
    if cluster_labels.shape != class_labels.shape:
        raise ValueError('cluster and class labels differ in shape: '
                         f'{tuple(cluster_labels.shape)} vs {tuple(class_labels.shape)}')
    if class_labels.numel() and (class_labels.min() < 0 or
                                 class_labels.max() >= num_classes):
        raise ValueError(f'class labels must lie in [0, {num_classes})')
    flat = cluster_labels.long() * num_classes + class_labels.long().to(
        cluster_labels.device)
    return torch.bincount(flat, minlength=num_clusters * num_classes).view(
        num_clusters, num_classes)


def center_weights(counts: Tensor, weighting: str = 'balanced',
                   sizes: Optional[Tensor] = None) -> Tensor:
    """w_kc [K, C], each column summing to 1; all-zero columns for absent classes.

    ``sizes``: n_k, the clustered instances per cluster [K], for ``balanced``'s
    n_kc / n_k; default ``counts.sum(1)``. Larger where unlabelled instances (the
    ``cluster_pool``) joined the clustering: they dilute a cluster's class shares without
    belonging to any class.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f'weighting must be one of {WEIGHTINGS}, got {weighting!r}')
    n = counts.double()
    if weighting == 'balanced':
        n_k = n.sum(1) if sizes is None else sizes.to(n)
        if n_k.shape != n.shape[:1] or bool((n_k < n.sum(1)).any()):
            raise ValueError(f'cluster sizes {tuple(n_k.shape)} must hold at least the '
                             f'labelled counts of each of the {n.shape[0]} clusters')
        n = n / n_k.unsqueeze(1).clamp(min=1)
    elif weighting == 'top_cluster':
        top = torch.zeros_like(n)
        top[n.argmax(0), torch.arange(n.shape[1])] = 1  # argmax: first of equal maxima
        n = torch.where(n.sum(0, keepdim=True) > 0, top, torch.zeros_like(n))
    col = n.sum(0, keepdim=True)
    return torch.where(col > 0, n / col.clamp(min=1e-300), torch.zeros_like(n))


def debiased_centers(centers: Tensor, counts: Tensor, weighting: str = 'balanced',
                     sizes: Optional[Tensor] = None) -> Tensor:
    """h_c = sum_k w_kc mu_k [C, D] (``sizes``: see ``center_weights``).

    A class with no instance has no weights; it gets the size-weighted mean of all
    centers (the data mean) so the result stays finite; its alpha is 0 anyway.
    """
    if counts.shape[0] != centers.shape[0]:
        raise ValueError(f'{centers.shape[0]} centers but counts for {counts.shape[0]}')
    w = center_weights(counts, weighting, sizes).to(centers)
    h = w.T @ centers
    absent = counts.sum(0) == 0
    if absent.any():
        sizes = (counts.sum(1) if sizes is None else sizes).to(centers)
        h[absent.to(h.device)] = (sizes @ centers) / sizes.sum().clamp(min=1)
    return h


def class_alphas(class_counts: Sequence[int], calibrated: Sequence[bool],
                 mode: str = 'fixed', alpha: float = 0.5,
                 alpha_max: float = 0.5) -> Tensor:
    """alpha_c [C]: 0 for uncalibrated or absent classes.

    ``fixed``: ``alpha`` for every calibrated class. ``imbalance``: rarer classes more,
    alpha_c = alpha_max * log(n_max / n_c) / log(n_max / n_min), clipped to
    [0, alpha_max]; n_max / n_min over all classes present. Without imbalance
    (n_max == n_min) every calibrated class gets alpha_max.
    """
    n = torch.as_tensor(class_counts, dtype=torch.float64)
    cal = torch.as_tensor(calibrated, dtype=torch.bool)
    if n.shape != cal.shape:
        raise ValueError(f'{n.numel()} class counts but {cal.numel()} calibrated flags')
    if mode not in ALPHA_MODES:
        raise ValueError(f'alpha mode must be one of {ALPHA_MODES}, got {mode!r}')
    present = n > 0
    if mode == 'fixed':
        if not 0 <= alpha <= 1:
            raise ValueError(f'alpha must lie in [0, 1], got {alpha}')
        a = torch.full_like(n, float(alpha))
    else:
        if not 0 <= alpha_max <= 1:
            raise ValueError(f'alpha_max must lie in [0, 1], got {alpha_max}')
        if not present.any():
            a = torch.zeros_like(n)
        else:
            n_max, n_min = float(n[present].max()), float(n[present].min())
            if n_max == n_min:
                a = torch.full_like(n, float(alpha_max))
            else:
                ratio = torch.log(n_max / n.clamp(min=1)) / math.log(n_max / n_min)
                a = (alpha_max * ratio).clamp(0, alpha_max)
    return torch.where(cal & present, a, torch.zeros_like(a)).float()


def calibrate(z: Tensor, labels: Tensor, class_centers: Tensor, alphas: Tensor,
              renormalize: bool = False) -> Tensor:
    """z_hat = (1 - alpha_c) z + alpha_c h_c (L2-normalised with ``renormalize``);
    instances of classes with alpha 0 keep z exactly."""
    a = alphas.to(z)[labels][:, None]
    out = (1 - a) * z + a * class_centers.to(z)[labels]
    if renormalize:
        out = torch.where(a > 0, F.normalize(out, dim=1), z)
    return out


def loss_scale(z: Tensor, z_hat: Tensor, labels: Tensor,
               natural_counts: Sequence[int], calibrated: Sequence[bool]) -> float:
    """Mean ||z - z_hat||^2 of one *calibrated* training instance at the start of stage 2.

    sum_{c cal} n_c g_c / sum_{c cal} n_c, with n_c the *natural* training counts and g_c
    the mean gap of the class's extracted instances. The calibration term of the feature
    loss (a mean over the calibrated instances of a batch) divided by it starts at about 1,
    whatever the backbone's feature scale and whatever cap (``max_per_class``) thinned the
    extracted set: the cap changes which instances are averaged, not the shares. It is not
    the gap per training instance (uncalibrated ones included): where the tail is 1 % of
    the instances that is 100x smaller, and dividing by it weights any drift of the
    uncalibrated features 100x (on the toy data it wrecked stage 2: docs/deblora.md).
    """
    n = torch.as_tensor(list(natural_counts), dtype=torch.float64)
    cal = torch.as_tensor(list(calibrated), dtype=torch.bool)
    if cal.numel() != n.numel():
        raise ValueError(f'{cal.numel()} calibrated flags for {n.numel()} classes')
    n = torch.where(cal, n, torch.zeros_like(n))
    if n.sum() <= 0:
        raise ValueError('loss_scale needs a calibrated class with training instances')
    labels = labels.long().cpu()
    gap = ((z.double() - z_hat.double()) ** 2).sum(1).cpu()
    per_class = torch.zeros_like(n).index_add_(0, labels, gap)
    seen = torch.bincount(labels, minlength=n.numel()).double()
    mean_gap = torch.where(seen > 0, per_class / seen.clamp(min=1), torch.zeros_like(n))
    return float((n / n.sum() * mean_gap).sum())


def feature_loss(z: Tensor, targets: Tensor, calibrated: Tensor,
                 hold_weight: float = 1.0) -> Tensor:
    """mean_{i cal} ||z_i - z_hat_i||^2 + w * mean_{i not cal} ||z_i - z_hat_i||^2.

    Two means, one over the batch's calibrated instances (pulled toward their calibrated
    targets) and one over the others (kept at their stage-1 features), so that the weight
    of the calibration term does not shrink with the tail's share of the batch and the
    weight of each uncalibrated instance does not grow with it. An empty part adds 0;
    with no instance at all the result is 0 and still connected to ``z`` (DDP). ``w``
    (``hold_weight``, default 1) weighs the second mean; 0 drops the hold (an ablation).
    """
    gap = ((z - targets) ** 2).sum(1)
    out = z.sum() * 0
    for part, weight in ((calibrated, 1.0), (~calibrated, hold_weight)):
        if part.any() and weight:
            out = out + weight * gap[part].mean()
    return out


def calibrated_mask(num_classes: int, class_names: Sequence[str],
                    groups: dict, calibrate_groups: Sequence[str] = ('tail',),
                    extra: Optional[Sequence[str]] = None) -> list:
    """Which classes are calibrated: members of the named groups (plus ``extra``)."""
    names = set(extra or ())
    for g in calibrate_groups:
        if g not in groups:
            raise ValueError(f'unknown group {g!r}; groups are {list(groups)}')
        names.update(groups[g])
    unknown = names - set(class_names)
    if unknown:
        raise ValueError(f'calibrated classes {sorted(unknown)} are not in the '
                         f'classes {list(class_names)}')
    if len(class_names) != num_classes:
        raise ValueError(f'{len(class_names)} class names for {num_classes} classes')
    return [c in names for c in class_names]
