"""The de-biasing state (centers, counts, alphas) and the steps that build it.

``fit_debias`` runs steps 2-3 of the method on extracted features: K-means, the cluster x
class counts n_kc, the de-biased centers h_c, alpha_c and the feature-loss scale. The state
round-trips through a plain dict of tensors / str / numbers (safe for
``torch.load(weights_only=True)``) and through a work-dir pair ``deblora_state.json`` +
``deblora_state.npz``.
"""
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from mmdeblora.utils.atomic import atomic_open
from .calibration import calibrate, class_alphas, count_matrix, debiased_centers, loss_scale
from .kmeans import kmeans

_TENSORS = ('centers', 'counts', 'class_centers', 'alphas', 'calibrated', 'natural_counts')
_OPTIONAL = ('unlabelled_counts', )  # saved when present


@dataclass
class DebiasState:
    """Everything stage 2 needs, and what the logs report."""
    centers: Tensor          # mu_k [K, D]
    counts: Tensor           # n_kc [K, C] of the clustered (possibly capped) instances
    class_centers: Tensor    # h_c [C, D]
    alphas: Tensor           # alpha_c [C]
    calibrated: Tensor       # [C] bool: asked for and present in the training set
    class_names: List[str]
    natural_counts: Optional[Tensor] = None  # [C] training instances before any cap
    groups: Dict[str, List[str]] = field(default_factory=dict)
    weighting: str = 'balanced'
    alpha_mode: str = 'imbalance'
    pool: str = 'avg'
    normalize: bool = True
    renormalize: bool = True
    inertia: float = float('nan')
    loss_scale: float = 1.0  # mean ||z - z_hat||^2 of a calibrated training instance
    stats: Dict[str, Dict[str, float]] = field(default_factory=dict)
    unlabelled_counts: Optional[Tensor] = None  # [K] unlabelled ``cluster_pool`` instances

    def __post_init__(self) -> None:
        if self.natural_counts is None:
            self.natural_counts = self.counts.sum(0)

    @property
    def cluster_sizes(self) -> Tensor:
        """n_k: the clustered instances per cluster, unlabelled pool ones included."""
        sizes = self.counts.sum(1)
        extra = self.unlabelled_counts
        return sizes if extra is None else sizes + extra.to(sizes)

    @property
    def class_counts(self) -> Tensor:
        """Instances per class in the clustered set (after ``max_per_class``)."""
        return self.counts.sum(0)

    @property
    def calibrated_names(self) -> List[str]:
        return [n for n, c in zip(self.class_names, self.calibrated.tolist()) if c]

    def to_dict(self) -> dict:
        d = {k: getattr(self, k).detach().cpu() for k in _TENSORS + _OPTIONAL
             if getattr(self, k) is not None}
        d.update(class_names=list(self.class_names), groups=dict(self.groups),
                 weighting=self.weighting, alpha_mode=self.alpha_mode, pool=self.pool,
                 normalize=self.normalize, renormalize=self.renormalize,
                 inertia=float(self.inertia), loss_scale=float(self.loss_scale),
                 stats=dict(self.stats))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'DebiasState':
        kw = dict(d)
        for k in _TENSORS + _OPTIONAL:
            if kw.get(k) is not None and not torch.is_tensor(kw[k]):
                kw[k] = torch.as_tensor(np.asarray(kw[k]))
        kw['calibrated'] = kw['calibrated'].bool()
        return cls(**kw)

    def save(self, out_dir: str, prefix: str = 'deblora_state') -> None:
        """``<prefix>.npz`` (arrays) and ``<prefix>.json`` (settings, readable summary)."""
        d = self.to_dict()
        with atomic_open(osp.join(out_dir, prefix + '.npz'), 'wb') as f:
            np.savez(f, **{k: d[k].numpy() for k in _TENSORS + _OPTIONAL if k in d})
        meta = {k: v for k, v in d.items() if k not in _TENSORS + _OPTIONAL}
        meta.update(cluster_sizes=self.cluster_sizes.tolist(),
                    class_counts=dict(zip(self.class_names, self.class_counts.tolist())),
                    natural_counts=dict(zip(self.class_names,
                                            self.natural_counts.tolist())),
                    alphas=dict(zip(self.class_names, self.alphas.tolist())),
                    calibrated=self.calibrated_names)
        with atomic_open(osp.join(out_dir, prefix + '.json')) as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def load(cls, out_dir: str, prefix: str = 'deblora_state') -> 'DebiasState':
        with open(osp.join(out_dir, prefix + '.json')) as f:
            meta = json.load(f)
        for k in ('cluster_sizes', 'class_counts', 'natural_counts', 'alphas',
                  'calibrated'):
            meta.pop(k, None)
        with np.load(osp.join(out_dir, prefix + '.npz')) as arrs:
            meta.update({k: arrs[k] for k in _TENSORS + _OPTIONAL if k in arrs.files})
        return cls.from_dict(meta)


def fit_debias(z: Tensor, labels: Tensor, class_names: Sequence[str],
               calibrated: Sequence[bool], *,
               natural_counts: Optional[Sequence[int]] = None,
               groups: Optional[Dict[str, List[str]]] = None,
               num_clusters: int = 32, kmeans_cfg: Optional[dict] = None,
               weighting: str = 'balanced', alpha_mode: str = 'imbalance',
               alpha: float = 0.5, alpha_max: float = 0.5, pool: str = 'avg',
               normalize: bool = True, renormalize: bool = True,
               log_fn: Optional[Callable[[str], None]] = None,
               unlabelled_z: Optional[Tensor] = None) -> DebiasState:
    """K-means on the instance features, then n_kc, h_c, alpha_c and the loss scale.

    ``natural_counts`` are the training instances per class before any per-class cap; the
    imbalance-dependent alphas and the loss scale use them (default: the counts of
    ``labels``). Raises when no class asked for calibration has a training instance:
    stage 2 would then silently be self-distillation.

    ``unlabelled_z``: features of unlabelled instances (``DebLoRAHook.cluster_pool``) that
    join the K-means fit and the cluster sizes n_k, and nothing else: they belong to no class,
    so they move the centers mu_k and dilute ``balanced``'s n_kc / n_k; counts, alphas and
    the loss scale are the labelled instances'.
    """
    num_classes = len(class_names)
    if natural_counts is None:
        natural_counts = torch.bincount(labels.long().cpu(), minlength=num_classes).tolist()
    natural = torch.as_tensor(list(natural_counts), dtype=torch.long)
    if natural.numel() != num_classes:
        raise ValueError(f'{natural.numel()} natural counts for {num_classes} classes')
    cal = torch.as_tensor(list(calibrated), dtype=torch.bool) & (natural > 0)
    if not cal.any():
        asked = [n for n, c in zip(class_names, calibrated) if c]
        raise ValueError(
            'no class to calibrate: the classes of calibrate_groups '
            f'({asked or "none"}) have no training instance (natural counts '
            f'{dict(zip(class_names, natural.tolist()))}); stage 2 would only '
            'distil the stage-1 model. Check groups / calibrate_groups.')
    n_lab = z.shape[0]
    fit_z = z if unlabelled_z is None else torch.cat([z, unlabelled_z.to(z)])
    km = kmeans(fit_z, num_clusters, log_fn=log_fn, **(kmeans_cfg or {}))
    k = km.centers.shape[0]
    cluster = km.labels.cpu()
    counts = count_matrix(cluster[:n_lab], labels.cpu(), k, num_classes)
    unlabelled_counts = None if unlabelled_z is None else \
        torch.bincount(cluster[n_lab:], minlength=k)
    centers = km.centers.cpu().float()
    sizes = None if unlabelled_counts is None else counts.sum(1) + unlabelled_counts
    h = debiased_centers(centers, counts, weighting, sizes)
    alphas = class_alphas(natural.tolist(), cal.tolist(), alpha_mode, alpha, alpha_max)
    zc, yc = z.cpu().float(), labels.cpu().long()
    scale = loss_scale(zc, calibrate(zc, yc, h, alphas, renormalize and normalize), yc,
                       natural.tolist(), cal.tolist())
    return DebiasState(
        centers=centers, counts=counts, class_centers=h, alphas=alphas, calibrated=cal,
        class_names=list(class_names), natural_counts=natural, groups=dict(groups or {}),
        weighting=weighting, alpha_mode=alpha_mode, pool=pool, normalize=normalize,
        renormalize=renormalize and normalize, inertia=km.inertia,
        loss_scale=scale if scale > 0 else 1.0, unlabelled_counts=unlabelled_counts)
