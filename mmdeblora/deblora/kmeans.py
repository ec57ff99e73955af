"""Class-agnostic K-means in torch: chunked, seeded, CPU or GPU, no N x N matrix.

Why our own: the de-biasing step runs inside training on whatever device the model is
on, with the features already there as tensors; sklearn would need a host copy and is not
guaranteed to be installed. Distances are computed chunk by chunk against the K centers
(memory O(chunk x K)), the init is greedy k-means++ (as sklearn) and the best of
``n_init`` restarts is kept.

Under DDP the caller gathers the features of all ranks first (``mmdeblora.engine.debias``
does): every rank then clusters the same data with the same seed, so all ranks end with
the same centers.
"""
import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

LogFn = Optional[Callable[[str], None]]


@dataclass
class KMeansResult:
    """Centers [K, D], the cluster of each point [N], inertia and Lloyd iterations."""
    centers: Tensor
    labels: Tensor
    inertia: float
    n_iter: int


def _sq_dists(x: Tensor, x_sq: Tensor, centers: Tensor) -> Tensor:
    """Squared euclidean distances [n, K] of one chunk to the centers, clamped at 0."""
    c_sq = (centers * centers).sum(1)
    d = x_sq[:, None] - 2.0 * (x @ centers.T) + c_sq[None, :]
    return d.clamp_(min=0)


def assign(x: Tensor, centers: Tensor, chunk_size: int = 8192,
           x_sq: Optional[Tensor] = None):
    """Nearest center of every point and its squared distance, chunk by chunk."""
    if x_sq is None:
        x_sq = (x * x).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    dists = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk_size):
        d = _sq_dists(x[s:s + chunk_size], x_sq[s:s + chunk_size], centers)
        dists[s:s + chunk_size], labels[s:s + chunk_size] = d.min(1)
    return labels, dists


def _min_dist_to(x: Tensor, x_sq: Tensor, points: Tensor, chunk_size: int) -> Tensor:
    """[P, N] squared distances of all points to each of a few candidate points."""
    out = torch.empty(points.shape[0], x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk_size):
        out[:, s:s + chunk_size] = _sq_dists(x[s:s + chunk_size], x_sq[s:s + chunk_size],
                                             points).T
    return out


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator,
                    chunk_size: int = 8192, x_sq: Optional[Tensor] = None) -> Tensor:
    """Greedy k-means++ seeding (2 + log k candidates per step, best potential wins)."""
    n = x.shape[0]
    if x_sq is None:
        x_sq = (x * x).sum(1)
    n_trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=generator, device=x.device)
    centers = [x[first]]
    closest = _min_dist_to(x, x_sq, x[first], chunk_size)[0]
    for _ in range(1, k):
        pot = closest.sum()
        if pot <= 0:  # all points coincide with a center: any point is as good
            cand = torch.randint(n, (n_trials,), generator=generator, device=x.device)
        else:
            cand = torch.multinomial(closest / pot, n_trials, replacement=True,
                                     generator=generator)
        d = torch.minimum(closest[None], _min_dist_to(x, x_sq, x[cand], chunk_size))
        best = int(d.sum(1).argmin())
        closest = d[best]
        centers.append(x[cand[best:best + 1]])
    return torch.cat(centers)


def _lloyd(x: Tensor, x_sq: Tensor, centers: Tensor, max_iter: int, tol_abs: float,
           chunk_size: int):
    k = centers.shape[0]
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        labels, dists = assign(x, centers, chunk_size, x_sq)
        sums = torch.zeros_like(centers).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        new = sums / counts.clamp(min=1)[:, None]
        empty = (counts == 0).nonzero().flatten()
        if empty.numel():  # relocate empty clusters to the worst-fitted points
            far = dists.topk(empty.numel()).indices
            new[empty] = x[far]
        shift = ((new - centers) ** 2).sum()
        centers = new
        if shift <= tol_abs:
            break
    labels, dists = assign(x, centers, chunk_size, x_sq)
    return centers, labels, float(dists.sum()), n_iter


def _check_range(x: Tensor, x_sq: Tensor) -> None:
    """Refuse features whose squared distances (or their sum) overflow ``x.dtype``.

    A distance is at most ``4 * max |x|^2`` and k-means++ samples by the sum of N of them;
    past ``finfo.max`` they become inf and torch.multinomial fails on NaN probabilities
    ("invalid multinomial distribution"), which names no cause. One max over N norms.
    """
    max_sq = float(x_sq.max())
    n, dtype, limit = x_sq.shape[0], x.dtype, torch.finfo(x.dtype).max
    if not math.isfinite(max_sq) or 4.0 * n * max_sq > limit:
        raise ValueError(
            f'kmeans: squared distances between the {n} features overflow {dtype} (largest '
            f'|feature value| {float(x.abs().max()):.3g}; the k-means++ potential reaches '
            f'{4.0 * n * max_sq:.3g}, {dtype} holds up to {limit:.3g}), so they would be '
            'non-finite: the features are far too large, as from a stage-1 run that diverged '
            '(kept finite by gradient clipping); check its loss and grad_norm logs and the '
            'checkpoint the features come from')


def kmeans(x: Tensor, k: int, n_init: int = 3, max_iter: int = 100, tol: float = 1e-4,
           seed: int = 0, chunk_size: int = 8192, device=None,
           log_fn: LogFn = None) -> KMeansResult:
    """Cluster ``x`` [N, D] into ``k`` clusters; the best of ``n_init`` seeded restarts.

    ``tol`` is relative, as in sklearn: Lloyd stops when the squared center shift is at
    most ``tol`` times the mean per-dimension variance of the data. With fewer distinct
    points than ``k`` the extra clusters are duplicates (some may end empty); with fewer
    points than ``k``, ``k`` is lowered to ``N`` (logged).
    """
    if x.dim() != 2:
        raise ValueError(f'kmeans expects features [N, D], got shape {tuple(x.shape)}')
    if x.shape[0] == 0:
        raise ValueError('kmeans got no features (N = 0)')
    bad = ~torch.isfinite(x).all(1)
    if bad.any():
        rows = bad.nonzero().flatten()
        raise ValueError(f'kmeans got {rows.numel()} of {x.shape[0]} feature rows with NaN '
                         f'or inf (first rows {rows[:10].tolist()}): the model produced '
                         'non-finite features (a diverged run or bad input data)')
    if k < 1 or n_init < 1 or max_iter < 1:
        raise ValueError(f'need k, n_init, max_iter >= 1, got {k}, {n_init}, {max_iter}')
    if device is not None:
        x = x.to(device)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.shape[0] < k:
        if log_fn:
            log_fn(f'kmeans: only {x.shape[0]} points for k={k}; using k={x.shape[0]}')
        k = x.shape[0]
    x_sq = (x * x).sum(1)
    _check_range(x, x_sq)
    tol_abs = float(tol * x.var(0, unbiased=False).mean()) if x.shape[0] > 1 else 0.0
    gen = torch.Generator(device=x.device)
    gen.manual_seed(seed)
    best: Optional[KMeansResult] = None
    for run in range(n_init):
        init = kmeans_plusplus(x, k, gen, chunk_size, x_sq)
        centers, labels, inertia, n_iter = _lloyd(x, x_sq, init, max_iter, tol_abs,
                                                  chunk_size)
        if log_fn:
            log_fn(f'kmeans restart {run + 1}/{n_init}: inertia {inertia:.6g} '
                   f'after {n_iter} iterations')
        if best is None or inertia < best.inertia:
            best = KMeansResult(centers, labels, inertia, n_iter)
    return best
