"""``ReweightLoss`` for classification heads (mmpretrain): C class channels, no background.

The detection ``ReweightLoss`` weights C + 1 channels (the RoI head's background last);
an mmpretrain ``LinearClsHead`` gives C. This subclass drops the background weight and is
registered in mmpretrain's ``MODELS``; the weights (``inverse``, ``sqrt_inverse``,
``effective_number``, normalised to mean 1 over the classes with samples) and the loss
(mmdet's softmax cross-entropy) are the detection loss's, unchanged.
"""
from typing import Sequence

import torch
from mmpretrain.registry import MODELS

from .class_counts import AUTO_HINT
from .reweight_loss import ReweightLoss


@MODELS.register_module()
class ClsReweightLoss(ReweightLoss):
    """Softmax cross-entropy with per-class weights from training sample counts.

    Args: as ``ReweightLoss`` (``class_counts``: list or ``'auto'`` with
    ``ClassStatsHook``; ``mode``; ``beta``; ``num_classes`` checks the counts' length).
    """

    custom_cls_channels = False  # mmpretrain heads do not ask; C channels, no background

    def check_placement(self, model=None, name: str = '') -> None:
        """A classification head is its place: nothing to refuse (the detection loss
        refuses dense detection heads)."""

    def __init__(self, *args, **kwargs) -> None:
        if 'bg_weight' in kwargs:
            raise TypeError('ClsReweightLoss has no background class: drop bg_weight')
        super().__init__(*args, **kwargs)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        super().set_class_counts(counts)
        self.class_weight = self.class_weight[:-1]  # no background channel

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, *args, **kwargs):
        if self.class_weight is None:
            raise RuntimeError(f'ClsReweightLoss has no class counts yet. {AUTO_HINT}')
        if cls_score.shape[-1] != len(self.class_weight):
            raise ValueError(f'cls_score has {cls_score.shape[-1]} channels but the counts '
                             f'give {len(self.class_weight)} classes')
        return super().forward(cls_score, label, *args, **kwargs)
