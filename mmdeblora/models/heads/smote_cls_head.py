"""LoRA + SMOTE: synthetic minority over-sampling (Chawla et al., JAIR 2002) in feature
space, for the linear classifier.

Design (online, per batch, from a feature bank), and why:

- SMOTE makes a synthetic minority example by taking a minority sample x_i, one of its k
  nearest neighbours x_j *of the same class*, and a point on the segment between them:
  s = x_i + u (x_j - x_i), u ~ U(0, 1) (Chawla et al., Sec. 4.2). Here the samples are the
  pooled features the linear head classifies, so the synthetic points re-balance the
  classifier, not the representation.
- A batch of 64 long-tailed crops rarely holds two samples of a tail class, so the
  neighbours come from a per-class bank of recent training features (``ClassFeatureBank``,
  64 per class by default). Synthetic features are made from bank features, which are
  detached: they train the head only; the real batch trains the LoRA adapters and the head
  exactly as in the LoRA row.
- ``unique_samples``: with ``False`` (the default) the bank is a ring of the last 64
  features of a class, which for a class of n_c < 64 crops holds about 64 / n_c views of
  each crop from the last 64 / n_c epochs (6.4 for a 10-crop class), so a feature's
  nearest "neighbours" are often other views of the same crop (measured on the bias
  benchmark: about 40 %, 26-52 %, of the k = 5 neighbours for the classes of 10-19 crops)
  and SMOTE degenerates toward duplicating with jitter. With ``True`` (the shipped row)
  the bank keeps one entry per crop (its latest view, keyed by ``sample_idx``), so
  neighbours are other crops, as SMOTE defines them, and no entry is more than an epoch
  old (docs/classification.md, "SMOTE's instability").
- How many: SMOTE to full balance (imbalanced-learn's default ``'auto'`` strategy: every
  class up to the largest class's count) means sum_c (n_max - n_c) synthetic samples for
  the N real ones. Per batch of B that is B * sum_c (n_max - n_c) / N in expectation
  (stochastic rounding), spread over the classes in proportion to n_max - n_c, so the
  classifier sees a class-balanced mix in every step, with the LoRA row's schedule.
- Loss: (sum of CE over real + synthetic) / B: every real sample keeps the per-sample
  weight it has in the LoRA row, each synthetic one gets the same weight (as training on
  the SMOTE-resampled set would).

The alternative, a stage after LoRA (extract features, ``imblearn`` SMOTE, retrain the
classifier), would add a stage and epochs the other rows do not have; the online form keeps
the row's schedule and needs no new dependency. A class with fewer than 2 features in the
bank cannot be interpolated and gets no synthetic sample in that step. Test time is plain
``LinearClsHead``.
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdeblora.models.losses.class_counts import AUTO_HINT, CountsArg, as_counts, check_counts_arg
from .class_feature_bank import ClassFeatureBank


def smote_features(feats: Tensor, n: int, k: int = 5,
                   generator: Optional[torch.Generator] = None
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n`` SMOTE points from the features [m, D] of one class (m >= 2).

    Returns the points [n, D] and, for each, the base index i, the neighbour index j (one of
    the ``min(k, m - 1)`` nearest other features of x_i, Euclidean) and the gap u [n, 1], so
    that ``points = feats[i] + u * (feats[j] - feats[i])``.
    """
    m = feats.shape[0]
    if m < 2:
        raise ValueError(f'SMOTE needs at least 2 samples of the class, got {m}')
    k = min(int(k), m - 1)
    dist = torch.cdist(feats, feats)
    dist.fill_diagonal_(math.inf)
    neighbours = dist.topk(k, dim=1, largest=False).indices  # [m, k]
    i = torch.randint(m, (n, ), generator=generator, device=feats.device)
    j = neighbours[i, torch.randint(k, (n, ), generator=generator, device=feats.device)]
    u = torch.rand(n, 1, generator=generator, device=feats.device, dtype=feats.dtype)
    return feats[i] + u * (feats[j] - feats[i]), i, j, u


def sample_ids(data_samples: List[DataSample]) -> Tensor:
    """The data set index of each sample (``sample_idx``, set by mmengine's datasets and
    kept by ``PackInputs``)."""
    if not all('sample_idx' in s for s in data_samples):
        raise KeyError('unique_samples needs sample_idx in every data sample (mmengine '
                       "datasets set it; keep it in PackInputs' meta_keys)")
    return torch.tensor([int(s.sample_idx) for s in data_samples], dtype=torch.long)


@MODELS.register_module()
class SMOTEClsHead(LinearClsHead):
    """``LinearClsHead`` trained on real features plus SMOTE features of the minority classes.

    Args:
        num_classes / in_channels: as ``LinearClsHead``.
        class_counts: training samples per class, or ``'auto'`` (``ClassStatsHook``).
        k_neighbors: SMOTE's k (5, as Chawla et al. and imbalanced-learn).
        bank_size: features kept per class.
        max_synthetic: cap on synthetic features per batch (``None``: no cap).
        unique_samples: one bank entry per training sample (its latest feature), keyed
            by the data samples' ``sample_idx`` (module docstring).
    """

    def __init__(self, num_classes: int, in_channels: int, class_counts: CountsArg = 'auto',
                 k_neighbors: int = 5, bank_size: int = 64,
                 max_synthetic: Optional[int] = None, unique_samples: bool = False,
                 **kwargs) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, **kwargs)
        if isinstance(k_neighbors, bool) or not isinstance(k_neighbors, int) or \
                k_neighbors < 1:
            raise ValueError(f'SMOTEClsHead.k_neighbors must be an integer >= 1, got '
                             f'{k_neighbors!r}')
        if max_synthetic is not None and (not isinstance(max_synthetic, int) or
                                          max_synthetic < 0):
            raise ValueError(f'SMOTEClsHead.max_synthetic must be None or an integer >= 0, '
                             f'got {max_synthetic!r}')
        self.k_neighbors, self.max_synthetic = k_neighbors, max_synthetic
        self.bank = ClassFeatureBank(num_classes, in_channels, bank_size,
                                     unique=unique_samples)
        self.class_counts: Optional[List[int]] = None
        counts = check_counts_arg(class_counts)
        if counts is not None:
            self.set_class_counts(counts)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        self.class_counts = as_counts(counts, self.num_classes)

    def synthetic_plan(self, batch_size: int) -> Tensor:
        """Number of synthetic features per class for a batch of ``batch_size`` [C]."""
        if self.class_counts is None:
            raise RuntimeError(f'SMOTEClsHead has no class counts yet. {AUTO_HINT}')
        n = torch.tensor(self.class_counts, dtype=torch.float64)
        # a class with no sample, or fewer than 2 in the bank so far, cannot be interpolated
        ready = (n > 0) & (self.bank.filled.cpu() >= 2)
        deficit = (n.max() - n) * ready
        if deficit.sum() == 0:
            return torch.zeros(self.num_classes, dtype=torch.long)
        expected = batch_size * float(deficit.sum() / n.sum())
        total = int(math.floor(expected + torch.rand(()).item()))  # stochastic rounding
        if self.max_synthetic is not None:
            total = min(total, self.max_synthetic)
        if total == 0:
            return torch.zeros(self.num_classes, dtype=torch.long)
        cls = torch.multinomial(deficit.float(), total, replacement=True)
        return torch.bincount(cls, minlength=self.num_classes)

    def synthesize(self, plan: Tensor) -> Tuple[Tensor, Tensor]:
        """SMOTE features [S, D] and their labels [S] for ``plan`` (counts per class)."""
        feats, labels = [], []
        for c in plan.nonzero().flatten().tolist():
            x, *_ = smote_features(self.bank.class_features(c), int(plan[c]),
                                   self.k_neighbors)
            feats.append(x)
            labels.append(torch.full((x.shape[0], ), c, dtype=torch.long))
        if not feats:
            return self.bank.feats.new_zeros(0, self.bank.dim), torch.zeros(0).long()
        return torch.cat(feats), torch.cat(labels)

    def loss(self, feats: Tuple[Tensor], data_samples: List[DataSample], **kwargs) -> dict:
        x = self.pre_logits(feats)
        target = torch.cat([s.gt_label for s in data_samples]).long().to(x.device)
        self.bank.update(x, target, sample_ids(data_samples) if self.bank.unique else None)
        syn_x, syn_y = self.synthesize(self.synthetic_plan(x.shape[0]))
        scores = self.fc(torch.cat([x, syn_x.to(x)]))
        labels = torch.cat([target, syn_y.to(target)])
        loss = self.loss_module(scores, labels, avg_factor=x.shape[0], **kwargs)
        return dict(loss=loss, num_synthetic=x.new_tensor(float(syn_y.numel())))

    def extra_repr(self) -> str:
        return (f'k_neighbors={self.k_neighbors}, max_synthetic={self.max_synthetic}, '
                f'unique_samples={self.bank.unique}')
