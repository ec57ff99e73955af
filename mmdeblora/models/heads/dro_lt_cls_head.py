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
- Schedule (``bias_lora_dro_lt.py``, the joint variant): the feature extractor (LoRA)
  and the classifier train together from the foundation with plain CE + the robust loss,
  on the LoRA row's data order and schedule, so the row differs from LoRA by the loss
  only. The official recipe (continue a CE model on class-aware resampling with CE
  weighted by n_c / n_max + the robust loss, classifier frozen; then the classifier alone
  with plain CE, still on class-aware resampling) is ``bias_lora_dro_lt_official.py``:
  ``TrainingPhasesHook`` switches the phases and calls :meth:`set_train_phase` here to
  turn the robust loss and the CE weighting on and off.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdeblora.models.losses.class_counts import AUTO_HINT, CountsArg, as_counts, check_counts_arg
from .class_feature_bank import ClassFeatureBank

CE_WEIGHTINGS = ('none', 'lt')


@MODELS.register_module()
class DROLTClsHead(LinearClsHead):
    """``LinearClsHead`` + DRO-LT on its input features (``loss_dro``: ``DROLTLoss`` options).

    Args:
        loss_dro: ``DROLTLoss`` options.
        bank_size: features kept per class for the centroids.
        dro: add the robust loss (``False``: plain CE; the bank still fills, so the
            centroids are ready when a later phase turns it on).
        ce_weighting: ``'none'`` (plain CE) or ``'lt'``: CE weighted by n_c / n_max, a
            weighted mean as ``nn.CrossEntropyLoss(weight=...)`` (the official ``ce_lt``
            of the DRO-LT phase, which re-weights the class-aware batches back toward the
            training distribution). ``'lt'`` needs ``class_counts``.
        class_counts: training samples per class, ``'auto'`` (``ClassStatsHook``) or
            ``None`` (only for ``ce_weighting='none'``).

    Logs ``loss`` (the head's CE) and ``loss_dro``; test time is plain ``LinearClsHead``.
    """

    def __init__(self, num_classes: int, in_channels: int, loss_dro: dict = dict(),
                 bank_size: int = 64, dro: bool = True, ce_weighting: str = 'none',
                 class_counts: Optional[CountsArg] = None, **kwargs) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, **kwargs)
        loss_dro = dict(dict(type='DROLTLoss', num_classes=num_classes), **loss_dro)
        self.loss_dro = MODELS.build(loss_dro)
        if self.loss_dro.num_classes != num_classes:
            raise ValueError(f'loss_dro.num_classes={self.loss_dro.num_classes} in a head '
                             f'with {num_classes} classes')
        self.bank = ClassFeatureBank(num_classes, in_channels, bank_size)
        self.class_counts: Optional[List[int]] = None
        if class_counts is not None and check_counts_arg(class_counts) is not None:
            self.set_class_counts(class_counts)
        self.dro, self.ce_weighting = True, 'none'
        self.set_train_phase(dro=dro, ce_weighting=ce_weighting)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        self.class_counts = as_counts(counts, self.num_classes)

    def set_train_phase(self, dro: Optional[bool] = None,
                        ce_weighting: Optional[str] = None) -> None:
        """Turn the robust loss on or off and choose the CE weighting (``None``: keep);
        called by ``TrainingPhasesHook`` (``model_options``)."""
        if dro is not None:
            if not isinstance(dro, bool):
                raise TypeError(f'DROLTClsHead.dro must be True or False, got {dro!r}')
            self.dro = dro
        if ce_weighting is not None:
            if ce_weighting not in CE_WEIGHTINGS:
                raise ValueError(f'DROLTClsHead.ce_weighting must be one of {CE_WEIGHTINGS}, '
                                 f'got {ce_weighting!r}')
            self.ce_weighting = ce_weighting

    def _ce(self, scores: Tensor, target: Tensor, data_samples: List[DataSample],
            **kwargs) -> dict:
        if self.ce_weighting == 'none':
            return self._get_loss(scores, data_samples, **kwargs)
        if self.class_counts is None:
            raise RuntimeError(f"DROLTClsHead(ce_weighting='lt') has no class counts. "
                               f'{AUTO_HINT}')
        counts = scores.new_tensor(self.class_counts)
        weight = (counts / counts.max())[target]
        loss = self.loss_module(scores, target, weight=weight, avg_factor=weight.sum())
        return dict(loss=loss)

    def loss(self, feats: Tuple[Tensor], data_samples: List[DataSample], **kwargs) -> dict:
        x = self.pre_logits(feats)
        target = torch.cat([s.gt_label for s in data_samples]).long().to(x.device)
        losses = self._ce(self.fc(x), target, data_samples, **kwargs)
        self.bank.update(x, target)  # every batch class has a centroid, as in the official
        if self.dro:
            centroids, valid = self.bank.class_means()
            losses['loss_dro'] = self.loss_dro(x, target, centroids, valid)
        else:
            losses['loss_dro'] = x.new_zeros(())
        return losses

    def extra_repr(self) -> str:
        return f'dro={self.dro}, ce_weighting={self.ce_weighting!r}'
