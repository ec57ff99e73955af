"""Is a representation head-biased? Five numbers on frozen features, model against oracle.

Plain torch on feature matrices (no runner), so that the diagnostics tool, the stage-2
comparison and the tests all call the same functions:

1. tail macro-F1 of the model's own classifier (``group_f1``), beside the oracle's;
2. a class-balanced linear probe (``balanced_probe``: classifier re-training on frozen
   features, every class weighted equally) fitted on the *same* long-tailed training
   crops for both models, so only the features differ;
3. tail-to-sibling centroid cosine distance (``sibling_distance``);
4. the share of tail instances whose nearest class centroid is a head class
   (``nearest_centroid_head_share``);
5. the share of tail training instances in head-majority K-means clusters
   (``head_cluster_share``, the clustering of ``mmdeblora.deblora.kmeans``).

and the pre-checks of debLoRA's premise (the tail's few training features misrepresent
it, and the de-biased centers h_c estimate it better):

a. the tail's intra-class spread (``tail_spread``), model against oracle;
b. / c. whether h_c is nearer its class's held-out centroid than any other class's, and
   how near it is against the mean of the class's training features
   (``center_estimates``).

Centroid distances use features centred on the split's mean: ReLU features all share a
large positive mean, which would make every cosine close to 1. ``center_estimates`` is
the exception: it compares points of one feature space, the switch's, where h_c lives.
"""
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mmpretrain.evaluation import SingleLabelMetric
from torch import Tensor

from mmdeblora.deblora.kmeans import kmeans


def f1_per_class(pred: Tensor, gt: Tensor, num_classes: int) -> np.ndarray:
    """Per-class F1 in percent, upstream's computation (as ``GroupF1Metric``)."""
    _, _, f1, _ = SingleLabelMetric.calculate(pred.long(), gt.long(), average=None,
                                              num_classes=num_classes)
    return f1.double().numpy()


def group_f1(pred: Tensor, gt: Tensor, classes: Sequence[str],
             groups: Dict[str, List[str]]) -> Dict[str, float]:
    """Macro-F1 per group and over all classes (as ``GroupF1Metric``)."""
    f1 = f1_per_class(pred, gt, len(classes))
    out = {f'{g}_f1': float(np.mean([f1[classes.index(c)] for c in names]))
           for g, names in groups.items() if names}
    out['macro_f1'] = float(f1.mean())
    return out


def balanced_probe(train_x: Tensor, train_y: Tensor, num_classes: int,
                   weight_decay: float = 1e-3, max_iter: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression on standardised features, each class weighted by
    the inverse of its count (class-balanced re-training of the classifier), by L-BFGS
    from zeros: deterministic."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    x = (train_x - mean) / std
    counts = torch.bincount(train_y, minlength=num_classes).double()
    weight = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp_min(1)),
                         torch.zeros_like(counts)).float()
    lin = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=max_iter,
                            line_search_fn='strong_wolfe')

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), train_y, weight=weight) + \
            weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # fold the standardisation into the layer: it applies to raw features
    with torch.no_grad():
        lin.weight.div_(std)
        lin.bias.sub_((lin.weight * mean).sum(1))
    return lin.eval()


def class_centroids(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Mean feature per class (NaN rows for absent classes)."""
    cent = torch.full((num_classes, x.shape[1]), float('nan'), dtype=x.dtype)
    for c in range(num_classes):
        if (y == c).any():
            cent[c] = x[y == c].mean(0)
    return cent


def sibling_distance(x: Tensor, y: Tensor, classes: Sequence[str],
                     siblings: Dict[str, str]) -> Dict[str, float]:
    """Cosine distance between each tail class's centroid and its sibling's (centred)."""
    cent = class_centroids(x - x.mean(0), y, len(classes))
    out = {}
    for tail, sib in siblings.items():
        a, b = cent[classes.index(tail)], cent[classes.index(sib)]
        out[tail] = float(1 - F.cosine_similarity(a, b, dim=0))
    return out


def nearest_centroid_head_share(train_x: Tensor, train_y: Tensor, x: Tensor, y: Tensor,
                                classes: Sequence[str],
                                groups: Dict[str, List[str]]) -> float:
    """Share of tail instances of ``x`` whose nearest training centroid (cosine, centred
    on the training mean) is a head class."""
    mean = train_x.mean(0)
    cent = class_centroids(train_x - mean, train_y, len(classes))
    valid = ~torch.isnan(cent).any(1)
    sims = F.normalize(x - mean, dim=1) @ F.normalize(torch.nan_to_num(cent), dim=1).T
    sims[:, ~valid] = -float('inf')
    nearest = sims.argmax(1)
    head = torch.tensor([classes[i] in groups['head'] for i in range(len(classes))])
    tail = torch.tensor([classes[int(i)] in groups['tail'] for i in y])
    if not tail.any():
        return float('nan')
    return float(head[nearest[tail]].float().mean())


def head_cluster_share(train_x: Tensor, train_y: Tensor, classes: Sequence[str],
                       groups: Dict[str, List[str]], k: int = 32, seed: int = 0) -> float:
    """Share of tail training instances in clusters where head instances are the majority
    (K-means on L2-normalised features, as the de-biasing step clusters)."""
    res = kmeans(F.normalize(train_x, dim=1), k, seed=seed)
    head = torch.tensor([classes[int(i)] in groups['head'] for i in train_y])
    tail = torch.tensor([classes[int(i)] in groups['tail'] for i in train_y])
    head_major = torch.zeros(k, dtype=torch.bool)
    for j in range(k):
        members = res.labels == j
        if members.any():
            head_major[j] = head[members].float().mean() > 0.5
    if not tail.any():
        return float('nan')
    return float(head_major[res.labels[tail]].float().mean())


def calibration_sibling_margins(z: Tensor, z_hat: Tensor, y: Tensor, class_centers: Tensor,
                                classes: Sequence[str],
                                siblings: Dict[str, str]) -> Dict[str, dict]:
    """Does the calibration move each tail class away from its sibling, or toward it?

    ``z``: the stage-1 training features the de-biasing step clustered, ``z_hat`` their
    calibrated targets, ``class_centers`` the de-biased centers h_c. Centroids m_c come
    from ``z``; every vector is centred on the mean of ``z``. Per tail class c with
    sibling s: the cosine distance of h_c to m_c and to m_s, and over the instances of c
    the mean margin cos(v, m_c) - cos(v, m_s) and the share with a positive margin, for
    v = z (before) and v = z_hat (after). A center nearer the sibling than the class
    itself pulls the class into its sibling: the margin shrinks.
    """
    mean = z.mean(0)
    cent = F.normalize(torch.nan_to_num(class_centroids(z - mean, y, len(classes))), dim=1)
    h = F.normalize(class_centers.to(z) - mean, dim=1)
    out = {}
    for tail, sib in siblings.items():
        c, s = classes.index(tail), classes.index(sib)
        members = y == c
        if not members.any():
            continue
        res = dict(sibling=sib, center_to_own=float(1 - h[c] @ cent[c]),
                   center_to_sibling=float(1 - h[c] @ cent[s]))
        for when, v in (('before', z), ('after', z_hat)):
            v = F.normalize(v[members] - mean, dim=1)
            margin = v @ cent[c] - v @ cent[s]
            res[f'margin_{when}'] = float(margin.mean())
            res[f'own_nearer_{when}'] = float((margin > 0).float().mean())
        out[tail] = res
    return out


def tail_spread(x: Tensor, y: Tensor, classes: Sequence[str],
                groups: Dict[str, List[str]]) -> Dict[str, float]:
    """Per tail class present: the mean cosine distance of its instances to its centroid,
    features centred on the split's mean, so that spreads of two models' features compare
    whatever offset each one's features share."""
    xc = x - x.mean(0)
    cent = class_centroids(xc, y, len(classes))
    out = {}
    for name in groups['tail']:
        c = classes.index(name)
        members = y == c
        if members.any():
            sims = F.normalize(xc[members], dim=1) @ F.normalize(cent[c], dim=0)
            out[name] = float((1 - sims).mean())
    return out


def center_estimates(centers: Tensor, train_z: Tensor, train_y: Tensor, eval_z: Tensor,
                     eval_y: Tensor, classes: Sequence[str],
                     names: Sequence[str]) -> Dict[str, dict]:
    """Is the de-biased center h_c a better estimate of its class than the class's
    training mean? Per class of ``names`` with training and held-out instances.

    ``centers``: h_c [C, D], built by the switch from ``train_z``; ``train_z`` /
    ``eval_z``: training and held-out features in the switch's space (L2-normalised when
    it normalises), not centred: h_c is a point of that space. With e_k the held-out
    centroid of class k and m_c the training mean of c, cosine distances d:
    ``nearest`` is the class k of least d(h_c, e_k) (``own_nearest``: it is c),
    ``center_to_heldout`` d(h_c, e_c), ``mean_to_heldout`` d(m_c, e_c) and ``ratio``
    their quotient (< 1: h_c is nearer the class as held out than its training mean).
    """
    num = len(classes)
    held = class_centroids(eval_z, eval_y, num)
    valid = ~torch.isnan(held).any(1)
    held_n = F.normalize(torch.nan_to_num(held), dim=1)
    train_m = F.normalize(torch.nan_to_num(class_centroids(train_z, train_y, num)), dim=1)
    h = F.normalize(centers.to(held_n), dim=1)
    out = {}
    for name in names:
        c = classes.index(name)
        if not (valid[c] and (train_y == c).any()):
            continue
        d = 1 - held_n @ h[c]
        d[~valid] = float('inf')
        nearest = int(d.argmin())
        to_center, to_mean = float(d[c]), float(1 - held_n[c] @ train_m[c])
        out[name] = dict(nearest=classes[nearest], own_nearest=nearest == c,
                         center_to_heldout=to_center, mean_to_heldout=to_mean,
                         ratio=to_center / to_mean if to_mean > 0 else
                         float('inf') if to_center > 0 else 1.0)
    return out
