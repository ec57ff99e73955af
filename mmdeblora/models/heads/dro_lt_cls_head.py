"""LoRA + DRO-LT: a linear head whose loss adds the DRO-LT robustness loss
(``mmdeblora.models.losses.DROLTLoss``) on the pooled features it classifies.

How it sits in this protocol, against the official recipe (dvirsamuel/DRO-LT ``main.py``
and README), and why:

- Centroids: the official code recomputes every class's mean training feature at the
  start of each epoch with a pass over the training set. Here they are the means of a
  per-class bank of the most recent training features (``ClassFeatureBank``, 64 per
  class): the exact mean over all of a tail class's features (at most one epoch old) and
  a running estimate for head classes, with no extra pass over the data. Bank features
  are detached, as the official centroids are (computed under ``no_grad``).
- Schedule: the official recipe continues a cross-entropy model with (class-aware
  re-sampling, CE weighted by n_c / n_max, + the robust loss) with the classifier frozen,
  then retrains the classifier with plain CE. Here the feature extractor (LoRA) and the
  classifier train together from the foundation with plain CE + the robust loss, on the
  LoRA row's data order and schedule, so the row differs from LoRA by the loss only. The
  official classifier phase is plain CE on natural sampling, which is what the joint CE
  gives the classifier here.
"""
from typing import List, Tuple

import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from .class_feature_bank import ClassFeatureBank


@MODELS.register_module()
class DROLTClsHead(LinearClsHead):
    """``LinearClsHead`` + DRO-LT on its input features (``loss_dro``: ``DROLTLoss`` options).

    Logs ``loss`` (the head's CE) and ``loss_dro``; test time is plain ``LinearClsHead``.
    """

    def __init__(self, num_classes: int, in_channels: int, loss_dro: dict = dict(),
                 bank_size: int = 64, **kwargs) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, **kwargs)
        loss_dro = dict(dict(type='DROLTLoss', num_classes=num_classes), **loss_dro)
        self.loss_dro = MODELS.build(loss_dro)
        if self.loss_dro.num_classes != num_classes:
            raise ValueError(f'loss_dro.num_classes={self.loss_dro.num_classes} in a head '
                             f'with {num_classes} classes')
        self.bank = ClassFeatureBank(num_classes, in_channels, bank_size)

    def loss(self, feats: Tuple[Tensor], data_samples: List[DataSample], **kwargs) -> dict:
        x = self.pre_logits(feats)
        target = torch.cat([s.gt_label for s in data_samples]).long().to(x.device)
        losses = self._get_loss(self.fc(x), data_samples, **kwargs)
        self.bank.update(x, target)  # every batch class has a centroid, as in the official
        centroids, valid = self.bank.class_means()
        losses['loss_dro'] = self.loss_dro(x, target, centroids, valid)
        return losses
