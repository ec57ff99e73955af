"""LoRA + logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR
2021): the logit-adjusted softmax cross-entropy.

Variant: the *loss* variant (the paper's logit-adjusted loss, its Eq. 10; ``--mode=loss``
in the official code), not post-hoc correction: training minimises
CE(f(x) + tau * log pi, y) with pi the training class priors, and prediction takes the
plain argmax of f(x), which the adjusted loss makes consistent for the balanced error.
As in the official code (google-research/logit_adjustment, ``utils.build_loss_fn``), the
adjustment is log(pi ** tau + 1e-12), so a class with no training sample gets a large
negative offset instead of -inf; tau defaults to 1.0, the paper's and the code's default.
"""
from typing import Optional, Sequence

import torch
from mmpretrain.models.losses import CrossEntropyLoss
from mmpretrain.registry import MODELS

from .class_counts import AUTO_HINT, CountsArg, as_counts, check_counts_arg


@MODELS.register_module()
class LogitAdjustLoss(CrossEntropyLoss):
    """mmpretrain's softmax ``CrossEntropyLoss`` on logits + tau * log(prior).

    Args:
        class_counts: training samples per class, or ``'auto'`` (``ClassStatsHook``).
        tau: the adjustment's temperature (1.0: the Bayes-consistent choice).
        num_classes: optional check of the counts' length.
        reduction / loss_weight: as ``CrossEntropyLoss``.
    """

    def __init__(self, class_counts: CountsArg = 'auto', tau: float = 1.0,
                 num_classes: Optional[int] = None, reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__(use_sigmoid=False, use_soft=False, reduction=reduction,
                         loss_weight=loss_weight)
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or tau < 0:
            raise ValueError(f'LogitAdjustLoss.tau must be a number >= 0, got {tau!r}')
        self.tau, self.num_classes = float(tau), num_classes
        self.register_buffer('adjustment', None, persistent=False)
        counts = check_counts_arg(class_counts)
        if counts is not None:
            self.set_class_counts(counts)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        counts = as_counts(counts, self.num_classes)
        prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
        device = self.adjustment.device if self.adjustment is not None else None
        self.class_counts = counts
        self.adjustment = torch.log(prior ** self.tau + 1e-12).float().to(device)

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, *args, **kwargs):
        if self.adjustment is None:
            raise RuntimeError(f'LogitAdjustLoss has no class counts yet. {AUTO_HINT}')
        if cls_score.shape[-1] != self.adjustment.numel():
            raise ValueError(f'cls_score has {cls_score.shape[-1]} channels but the counts '
                             f'give {self.adjustment.numel()} classes')
        return super().forward(cls_score + self.adjustment.to(cls_score), label, *args,
                               **kwargs)

    def extra_repr(self) -> str:
        return f'tau={self.tau}'
