"""A 2-D picture of the clustered instance features: by class, tail classes marked, the
K-means centers and the de-biased class centers drawn.

PCA by default (the centers are projected with the same map as the instances, and it
takes milliseconds on the CPU); t-SNE on request, with the centers embedded together with
the instances (t-SNE cannot map new points).
"""
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from mmdeblora.utils.atomic import atomic_path

METHODS = ('pca', 'tsne')


def embed_2d(x: np.ndarray, method: str = 'pca', seed: int = 0) -> Tuple[np.ndarray, str]:
    """2-D embedding of the rows of ``x``; returns (points, name of the method)."""
    if method not in METHODS:
        raise ValueError(f'embedding method must be one of {METHODS}, got {method!r}')
    if method == 'tsne':
        from sklearn.manifold import TSNE
        perp = float(min(30, max(2, (len(x) - 1) // 3)))
        return TSNE(2, perplexity=perp, init='pca', random_state=seed).fit_transform(
            x), 't-SNE'
    xc = torch.from_numpy(np.asarray(x, dtype=np.float64))
    mean = xc.mean(0)
    _, _, v = torch.linalg.svd(xc - mean, full_matrices=False)
    return ((xc - mean) @ v[:2].T).numpy(), 'PCA'


def plot_embedding(z: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                   groups: Dict[str, Sequence[str]], path: str,
                   centers: Optional[np.ndarray] = None,
                   class_centers: Optional[np.ndarray] = None,
                   calibrated: Optional[Sequence[bool]] = None,
                   z_hat: Optional[np.ndarray] = None, method: str = 'pca',
                   max_points: int = 3000, seed: int = 0) -> str:
    """Save the figure to ``path`` (PNG); two panels when ``z_hat`` is given (before /
    after calibration). Returns the method used."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    rng = np.random.RandomState(seed)
    idx = rng.permutation(len(labels))[:max_points]
    z, labels = np.asarray(z)[idx], np.asarray(labels)[idx]
    parts = [z] + ([np.asarray(z_hat)[idx]] if z_hat is not None else [])
    extra = [a for a in (centers, class_centers) if a is not None]
    pts, name = embed_2d(np.concatenate(parts + [np.asarray(a) for a in extra]), method, seed)
    n = len(z)
    panels = [pts[:n]] + ([pts[n:2 * n]] if z_hat is not None else [])
    off = n * len(parts)
    mu = pts[off:off + len(centers)] if centers is not None else None
    off += len(centers) if centers is not None else 0
    hc = pts[off:off + len(class_centers)] if class_centers is not None else None
    tail = set(groups.get('tail', ()))
    cmap = plt.get_cmap('tab20')
    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 6.5), squeeze=False,
                             sharex=True, sharey=True)
    titles = ['before calibration', 'after calibration']
    for ax, p, title in zip(axes[0], panels, titles):
        for c, cname in enumerate(class_names):
            m = labels == c
            if not m.any():
                continue
            is_tail = cname in tail
            ax.scatter(p[m, 0], p[m, 1], s=14 if is_tail else 4, color=cmap(c % 20),
                       marker='^' if is_tail else 'o', alpha=0.9 if is_tail else 0.45,
                       edgecolors='k' if is_tail else 'none', linewidths=0.3,
                       label=f"{cname}{' (tail)' if is_tail else ''} ({int(m.sum())})")
        if mu is not None:
            ax.scatter(mu[:, 0], mu[:, 1], marker='+', s=60, c='k', linewidths=1.2,
                       label='K-means centers')
        if hc is not None:
            for c in range(len(class_names)):
                if calibrated is not None and calibrated[c]:
                    ax.scatter(hc[c, 0], hc[c, 1], marker='*', s=260, color=cmap(c % 20),
                               edgecolors='k', linewidths=0.8)
        note = ' (stars: de-biased centers h_c)' if hc is not None else ''
        ax.set_title(f'{name}, {title}{note}')
    axes[0][0].legend(fontsize=6, markerscale=1.5, loc='best', ncol=2)
    fig.tight_layout()
    try:  # renamed into place: a symlink there is replaced, a failed write leaves no file
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return name
