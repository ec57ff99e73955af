"""Effective Class-Margin loss (Cho & Kraehenbuehl, "Long-tail Detection with
Effective Class-Margins", ECCV 2022) for the RoI classifier."""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.models.losses import accuracy
from mmdet.models.losses.utils import weight_reduce_loss
from mmrotate.registry import MODELS

from .class_counts import AUTO_HINT, CountsArg, as_counts, check_counts_arg
from .placement import RoIHeadOnlyLoss, roi_only_hint

PLACEMENT_HINT = roi_only_hint(
    'ECMLoss', ' and use its test-time activation',
    'it trains without an error and detects nothing (mAP 0)',
    'use a loss made for dense heads there (e.g. mmdet.FocalLoss)')


def ecm_margins_and_weights(counts: Sequence[int], fg_bg_ratio: float = 6.3313
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positive margins, negative margins and class weights, each of length C + 1.

    As in the official code (janghyuncho/ECM-Loss, ``effective_class_margin_loss.py``
    and ``ecm_utils.py``): n = (n_1..n_C, fg_bg_ratio * sum n_c) with the background
    last, n_neg = sum(n) - n_c,
    pos_c = log((n_c^1/4 + n_neg^1/4) / n_neg^1/4),
    neg_c = log((n_c^1/4 + n_neg^1/4) / n_c^1/4),
    w_c = a_c log((1 + a_c) / a_c) with a_c = (sum(n) - n_c) / n_c.
    Deviation: a class with zero instances is counted as one instance (the formulas
    would give an infinite negative margin and 0 * inf weight).
    """
    fg = torch.tensor(as_counts(counts), dtype=torch.float64)
    fg = fg.clamp(min=1.0)
    n = torch.cat([fg, fg.sum()[None] * fg_bg_ratio])
    n_neg = n.sum() - n
    q_pos, q_neg = n.pow(0.25), n_neg.pow(0.25)
    pos = torch.log((q_pos + q_neg) / q_neg)
    neg = torch.log((q_pos + q_neg) / q_pos)
    a = (n.sum() - n) / n
    w = a * torch.log((1 + a) / a)
    return pos.float(), neg.float(), w.float()


@MODELS.register_module()
class ECMLoss(RoIHeadOnlyLoss, nn.Module):
    """ECM loss with C + 1 sigmoid outputs, pluggable into any mmdet ``BBoxHead``.

    Per RoI i and class c (background = index C), with score s and target t:
    p = e^(s+pos_c) / (e^(s+pos_c) + e^(-s+neg_c)) = sigmoid(2 s + pos_c - neg_c)
    (computed in the stable sigmoid form), loss_ic = -[t log p + (1-t) log(1-p)],
    loss_i = sum_c w_c loss_ic.

    ``label_weights`` / ``avg_factor`` (a choice; the official loss ignores both and
    returns sum_i loss_i / number of RoIs): ours multiplies loss_i by the RoI's label
    weight and divides the sum by ``avg_factor`` when given, else by the number of
    RoIs. mmdet's bbox heads pass label weights of 1 and avg_factor = number of RoIs
    with a positive label weight, so the default case equals the official loss, while
    a sampler or a ``pos_weight`` that weights RoIs is honoured instead of dropped.

    Counts are training *instance* counts (see ``mmdeblora.datasets.class_stats``);
    the official code used LVIS / OpenImages *image* counts, which do not exist for
    DOTA patches in a useful form.

    Test time (``get_activation``): sigmoid of the raw scores, foreground scores
    multiplied by (1 - background probability), as in the official code; the margins
    only shape training. mmdet's ``BBoxHead`` uses these through
    ``custom_cls_channels`` / ``custom_activation`` / ``custom_accuracy``, so mmrotate's
    ``RotatedShared2FCBBoxHead`` needs no change.

    Args:
        num_classes: foreground classes C (the head's ``num_classes``).
        class_counts: training instances per class, or ``'auto'`` (``ClassStatsHook``).
        fg_bg_ratio: background count = ratio * foreground instances (the official
            default 6.3313, measured on Mask R-CNN samples).
    """

    custom_activation = True
    custom_accuracy = True
    placement_hint = PLACEMENT_HINT

    def __init__(self, num_classes: int, class_counts: CountsArg = 'auto',
                 fg_bg_ratio: float = 6.3313, reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if fg_bg_ratio <= 0:
            raise ValueError(f'fg_bg_ratio must be > 0, got {fg_bg_ratio}')
        self.num_classes = num_classes
        self.fg_bg_ratio = fg_bg_ratio
        self.reduction = reduction
        self.loss_weight = loss_weight
        # Not saved in checkpoints: they follow from the counts, which are set again
        # before every training run, and testing does not use them.
        for name in ('pos_margin', 'neg_margin', 'class_weight'):
            self.register_buffer(name, None, persistent=False)
        counts = check_counts_arg(class_counts)
        if counts is not None:
            self.set_class_counts(counts)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        counts = as_counts(counts, self.num_classes)
        pos, neg, w = ecm_margins_and_weights(counts, self.fg_bg_ratio)
        device = next((b.device for b in self.buffers()), None)
        self.class_counts = counts
        self.pos_margin, self.neg_margin, self.class_weight = (
            t.to(device) if device is not None else t for t in (pos, neg, w))

    def get_cls_channels(self, num_classes: int) -> int:
        if num_classes != self.num_classes:
            raise ValueError(f'ECMLoss(num_classes={self.num_classes}) in a head with '
                             f'{num_classes} classes')
        return super().get_cls_channels(num_classes)

    def get_activation(self, cls_score: torch.Tensor) -> torch.Tensor:
        scores = cls_score.sigmoid()
        fg = scores[:, :self.num_classes] * (1 - scores[:, self.num_classes:])
        return torch.cat([fg, scores[:, self.num_classes:]], dim=1)

    def get_accuracy(self, cls_score: torch.Tensor,
                     labels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Objectness accuracy (background logit > 0 means background) and the
        accuracy among foreground classes on foreground RoIs."""
        is_bg = (labels == self.num_classes).long()
        bg_logit = cls_score[:, self.num_classes:]
        acc_obj = accuracy(torch.cat([-bg_logit, bg_logit], dim=1), is_bg)
        fg = labels < self.num_classes
        acc_cls = accuracy(cls_score[fg, :self.num_classes], labels[fg])
        return dict(acc_objectness=acc_obj, acc_classes=acc_cls)

    def forward(self, cls_score: torch.Tensor, labels: torch.Tensor,
                label_weights: Optional[torch.Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None, **kwargs) -> torch.Tensor:
        self.check_placement()
        if self.class_weight is None:
            raise RuntimeError(f'ECMLoss has no class counts yet. {AUTO_HINT}')
        if cls_score.shape[1] != self.num_classes + 1:
            raise ValueError(f'ECMLoss expects {self.num_classes + 1} score channels, '
                             f'got {cls_score.shape[1]}')
        reduction = reduction_override or self.reduction
        target = F.one_hot(labels.long(), self.num_classes + 1).to(cls_score.dtype)
        pos, neg, w = (t.to(cls_score) for t in
                       (self.pos_margin, self.neg_margin, self.class_weight))
        logit = 2 * cls_score + pos - neg
        per_class = F.binary_cross_entropy_with_logits(logit, target, reduction='none')
        per_roi = (per_class * w).sum(dim=1)
        if label_weights is not None:
            label_weights = label_weights.float()
        if avg_factor is None and reduction == 'mean':
            avg_factor = max(cls_score.shape[0], 1)
        loss = weight_reduce_loss(per_roi, label_weights, reduction,
                                  avg_factor if reduction == 'mean' else None)
        return self.loss_weight * loss

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}, fg_bg_ratio={self.fg_bg_ratio}'
