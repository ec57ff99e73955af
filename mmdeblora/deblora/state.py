"""The de-biasing state (centers, counts, alphas) and the steps that build it.

``fit_debias`` runs steps 2-4 of the method on extracted features: K-means, the cluster x
class counts, the de-biased centers h_c and alpha_c. The state round-trips through a
plain dict of tensors / str / numbers (safe for ``torch.load(weights_only=True)``) and
through a work-dir pair ``deblora_state.json`` + ``deblora_state.npz``.
"""
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from .calibration import calibrate, class_alphas, count_matrix, debiased_centers
from .kmeans import kmeans

_TENSORS = ('centers', 'counts', 'class_centers', 'alphas', 'calibrated')


@dataclass
class DebiasState:
    """Everything stage 2 needs, and what the logs report."""
    centers: Tensor          # mu_k [K, D]
    counts: Tensor           # n_kc [K, C]
    class_centers: Tensor    # h_c [C, D]
    alphas: Tensor           # alpha_c [C]
    calibrated: Tensor       # [C] bool
    class_names: List[str]
    weighting: str = 'balanced'
    alpha_mode: str = 'fixed'
    pool: str = 'avg'
    normalize: bool = True
    inertia: float = float('nan')
    loss_scale: float = 1.0  # mean ||z - z_hat||^2 over the extracted instances
    stats: Dict[str, Dict[str, float]] = field(default_factory=dict)

    @property
    def cluster_sizes(self) -> Tensor:
        return self.counts.sum(1)

    @property
    def class_counts(self) -> Tensor:
        return self.counts.sum(0)

    def to_dict(self) -> dict:
        d = {k: getattr(self, k).detach().cpu() for k in _TENSORS}
        d.update(class_names=list(self.class_names), weighting=self.weighting,
                 alpha_mode=self.alpha_mode, pool=self.pool, normalize=self.normalize,
                 inertia=float(self.inertia), loss_scale=float(self.loss_scale),
                 stats=dict(self.stats))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'DebiasState':
        kw = dict(d)
        for k in _TENSORS:
            kw[k] = torch.as_tensor(np.asarray(kw[k])) if not torch.is_tensor(kw[k]) \
                else kw[k]
        kw['calibrated'] = kw['calibrated'].bool()
        return cls(**kw)

    def save(self, out_dir: str, prefix: str = 'deblora_state') -> None:
        """``<prefix>.npz`` (arrays) and ``<prefix>.json`` (settings, readable summary)."""
        d = self.to_dict()
        np.savez(osp.join(out_dir, prefix + '.npz'),
                 **{k: d[k].numpy() for k in _TENSORS})
        meta = {k: v for k, v in d.items() if k not in _TENSORS}
        meta.update(cluster_sizes=self.cluster_sizes.tolist(),
                    class_counts=self.class_counts.tolist(),
                    alphas=self.alphas.tolist(),
                    calibrated=[n for n, c in zip(self.class_names, self.calibrated) if c])
        with open(osp.join(out_dir, prefix + '.json'), 'w') as f:
            json.dump(meta, f, indent=2)

    @classmethod
    def load(cls, out_dir: str, prefix: str = 'deblora_state') -> 'DebiasState':
        with open(osp.join(out_dir, prefix + '.json')) as f:
            meta = json.load(f)
        for k in ('cluster_sizes', 'class_counts', 'alphas', 'calibrated'):
            meta.pop(k, None)
        with np.load(osp.join(out_dir, prefix + '.npz')) as arrs:
            meta.update({k: arrs[k] for k in _TENSORS})
        return cls.from_dict(meta)


def fit_debias(z: Tensor, labels: Tensor, class_names: Sequence[str],
               calibrated: Sequence[bool], num_clusters: int = 32,
               kmeans_cfg: Optional[dict] = None, weighting: str = 'balanced',
               alpha_mode: str = 'fixed', alpha: float = 0.5, alpha_max: float = 0.5,
               pool: str = 'avg', normalize: bool = True,
               log_fn: Optional[Callable[[str], None]] = None) -> DebiasState:
    """K-means on all instance features, then n_kc, h_c and alpha_c."""
    km = kmeans(z, num_clusters, log_fn=log_fn, **(kmeans_cfg or {}))
    num_classes = len(class_names)
    counts = count_matrix(km.labels.cpu(), labels.cpu(), km.centers.shape[0], num_classes)
    centers = km.centers.cpu().float()
    h = debiased_centers(centers, counts, weighting)
    alphas = class_alphas(counts.sum(0).tolist(), calibrated, alpha_mode, alpha, alpha_max)
    zc, yc = z.cpu().float(), labels.cpu().long()
    gap = float(((zc - calibrate(zc, yc, h, alphas)) ** 2).sum(1).mean())
    return DebiasState(
        centers=centers, counts=counts, class_centers=h, alphas=alphas,
        calibrated=torch.as_tensor(list(calibrated), dtype=torch.bool),
        class_names=list(class_names), weighting=weighting, alpha_mode=alpha_mode,
        pool=pool, normalize=normalize, inertia=km.inertia,
        loss_scale=gap if gap > 0 else 1.0)
