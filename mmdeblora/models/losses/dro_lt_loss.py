"""DRO-LT: the distributional robustness loss (Samuel & Chechik, "Distributional Robustness
Loss for Long-tail Learning", ICCV 2021), on class centroids of the training features.

Formulas as in the official code (github.com/dvirsamuel/DRO-LT, ``losses.py``, class
``DROLoss``, and its use in ``main.py``), read, not copied:

- centroids mu_c: the mean training feature of each class that has one;
- a_ci = -||mu_c - z_i||_2 for every centroid c and batch feature z_i; for the positive
  pairs (y_i = c) the robustness margin is subtracted: a_ci = -||mu_c - z_i|| - eps_{y_i};
- logits a_ci / T, and a log-softmax **over the batch samples** for each centroid
  (``torch.log(torch.exp(logits).sum(1))`` on the [centroids, batch] matrix: each
  centroid's softmax runs over the batch, not over the classes);
- per batch class k: the mean of those log-probabilities over the samples of class k;
  the positive term of centroid c is the value at k = c (0 when c is not in the batch);
- loss_c = -(T / T_base) * positive_c; without class weights (the configuration of the
  README's recipe) loss = sum_c loss_c / (number of classes in the batch);
- eps: one learned value per class, initialised to 1 (``margin_type='learned'``:
  ``nn.Parameter(torch.ones(num_classes))`` trained by the feature optimizer).

One deliberate difference: the official code subtracts eps with
``pairwise[mask] = a[mask] - eps[batch_targets]``, which pairs the positive entries, taken
in centroid-major order, with eps in batch order; the two orders agree only when the batch
is sorted by class. Here each positive pair (c = y_i) gets eps_{y_i}, the stated intent
(identical while all eps are equal, e.g. at the start).

Note on the learned eps: the loss only decreases as eps decreases (the margin makes
positives harder), so with SGD it drifts down, held by weight decay only; that is the
official code's behaviour and is kept. ``learn_epsilon=False`` keeps it fixed.
"""
from typing import Optional

import torch
from mmpretrain.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class DROLTLoss(nn.Module):
    """DRO-LT robustness loss on features and class centroids.

    Args:
        num_classes: number of classes (size of eps).
        temperature: T (the official README's recipe uses 1; the code's default 0.07).
        base_temperature: T_base (``None``: equal to T, as the official ``main.py`` builds
            it, so the factor T / T_base is 1).
        epsilon: initial eps per class (official: 1).
        learn_epsilon: train eps (official ``margin_type='learned'``) or keep it fixed.
        loss_weight: factor on the loss (the official recipe adds it to CE with weight 1).
    """

    def __init__(self, num_classes: int, temperature: float = 1.0,
                 base_temperature: Optional[float] = None, epsilon: float = 1.0,
                 learn_epsilon: bool = True, loss_weight: float = 1.0) -> None:
        super().__init__()
        if temperature <= 0 or (base_temperature is not None and base_temperature <= 0):
            raise ValueError('DROLTLoss temperatures must be > 0, got '
                             f'{temperature}, {base_temperature}')
        self.num_classes = num_classes
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature or temperature)
        self.loss_weight = loss_weight
        eps = torch.full((num_classes, ), float(epsilon))
        if learn_epsilon:
            self.epsilon = nn.Parameter(eps)
        else:
            self.register_buffer('epsilon', eps)

    def forward(self, feats: Tensor, labels: Tensor, centroids: Tensor,
                valid: Optional[Tensor] = None) -> Tensor:
        """``feats`` [B, D], ``labels`` [B], ``centroids`` [C, D]; ``valid`` [C] marks the
        classes that have a centroid (default: all)."""
        if centroids.shape[0] != self.num_classes:
            raise ValueError(f'{centroids.shape[0]} centroids for {self.num_classes} classes')
        labels = labels.long()
        if valid is None:
            valid = torch.ones(self.num_classes, dtype=torch.bool, device=feats.device)
        cent_cls = valid.nonzero().flatten().to(feats.device)          # [C']
        pairwise = -torch.cdist(centroids[cent_cls].to(feats), feats)  # [C', B]
        pos = cent_cls[:, None] == labels[None, :]                     # [C', B]
        pairwise = pairwise - pos * self.epsilon.to(feats)[labels][None, :]
        logits = pairwise / self.temperature
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        classes = labels.unique()                                     # [K]
        member = (labels[:, None] == classes[None, :]).to(feats)      # [B, K]
        log_prob = log_prob @ (member / member.sum(0, keepdim=True))  # [C', K] class means
        pos_k = (cent_cls[:, None] == classes[None, :]).to(feats)
        loss = -(self.temperature / self.base_temperature) * (pos_k * log_prob).sum(1)
        return self.loss_weight * loss.sum() / len(classes)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, temperature={self.temperature}, '
                f'base_temperature={self.base_temperature}, '
                f'learn_epsilon={isinstance(self.epsilon, nn.Parameter)}')
