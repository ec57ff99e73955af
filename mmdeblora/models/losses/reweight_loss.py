"""Softmax cross-entropy with per-class weights from training instance counts."""
from typing import List, Optional, Sequence

import torch
from mmdet.models.losses import CrossEntropyLoss
from mmrotate.registry import MODELS

from .class_counts import AUTO_HINT, CountsArg, as_counts, check_counts_arg
from .placement import RoIHeadOnlyLoss, roi_only_hint

REWEIGHT_MODES = ('inverse', 'sqrt_inverse', 'effective_number')
PLACEMENT_HINT = roi_only_hint(
    'ReweightLoss', ' (a softmax over C foreground classes + background)',
    'its softmax cross-entropy over every anchor, divided by the number of positive '
    'anchors, trains without a warning at a loss_cls in the thousands',
    "keep the dense head's sigmoid mmdet.FocalLoss there (it already down-weights the "
    'many easy examples), or use a two-stage detector '
    '(configs/baselines/oriented_rcnn_r18_lora_reweight_toy.py)')


def reweight_class_weights(counts: Sequence[int], mode: str = 'inverse',
                           beta: float = 0.999, bg_weight: float = 1.0) -> List[float]:
    """Per-class weights (C foreground + background last) from instance counts.

    ``inverse``: 1 / n_c; ``sqrt_inverse``: 1 / sqrt(n_c); ``effective_number`` (Cui et
    al., CVPR 2019): (1 - beta) / (1 - beta ** n_c). Foreground weights are normalised
    to mean 1 over the classes that have instances (Cui et al. normalise to sum C, the
    same thing), so the loss scale stays that of plain cross-entropy. A class with no
    instance never is a target during training; it gets the weight of the rarest seen
    class instead of an infinity, and does not enter the normalisation.
    """
    if mode not in REWEIGHT_MODES:
        raise ValueError(f'mode must be one of {REWEIGHT_MODES}, got {mode!r}')
    if not 0.0 <= beta < 1.0:
        raise ValueError(f'effective-number beta must be in [0, 1), got {beta}')
    n = torch.tensor(as_counts(counts), dtype=torch.float64)
    seen = n > 0
    ns = n[seen]
    if mode == 'inverse':
        w = 1.0 / ns
    elif mode == 'sqrt_inverse':
        w = ns.rsqrt()
    else:
        w = (1.0 - beta) / (1.0 - torch.pow(beta, ns))
    w = w / w.mean()
    full = torch.full_like(n, float(w.max()))
    full[seen] = w
    return full.tolist() + [float(bg_weight)]


@MODELS.register_module()
class ReweightLoss(RoIHeadOnlyLoss, CrossEntropyLoss):
    """mmdet's softmax ``CrossEntropyLoss`` whose ``class_weight`` comes from counts.

    Everything else (per-RoI ``label_weights``, ``avg_factor``, reductions, the
    ``acc`` the bbox head reports) is upstream's: only the class weights differ. Only an
    RoI bbox head may hold it (:class:`~.placement.RoIHeadOnlyLoss`): a dense head is
    refused before the first iteration.

    Args:
        class_counts: training instances per foreground class, or ``'auto'`` (set by
            ``ClassStatsHook`` through :meth:`set_class_counts` before training).
        mode: ``'inverse'``, ``'sqrt_inverse'`` or ``'effective_number'``.
        beta: the effective-number hyper-parameter (Cui et al. use 0.9-0.9999).
        bg_weight: weight of the background class (index C); 1 keeps the foreground /
            background balance of plain cross-entropy.
        num_classes: optional check of the counts' length.
    """

    placement_hint = PLACEMENT_HINT

    def __init__(self, class_counts: CountsArg = 'auto', mode: str = 'inverse',
                 beta: float = 0.999, bg_weight: float = 1.0,
                 num_classes: Optional[int] = None, reduction: str = 'mean',
                 loss_weight: float = 1.0) -> None:
        super().__init__(use_sigmoid=False, reduction=reduction, loss_weight=loss_weight)
        if mode not in REWEIGHT_MODES:
            raise ValueError(f'mode must be one of {REWEIGHT_MODES}, got {mode!r}')
        self.mode, self.beta, self.bg_weight = mode, beta, bg_weight
        self.num_classes = num_classes
        counts = check_counts_arg(class_counts)
        if counts is not None:
            self.set_class_counts(counts)

    def set_class_counts(self, counts: Sequence[int]) -> None:
        counts = as_counts(counts, self.num_classes)
        self.class_counts = counts
        self.class_weight = reweight_class_weights(counts, self.mode, self.beta,
                                                   self.bg_weight)

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, *args, **kwargs):
        if self.class_weight is None:
            raise RuntimeError(f'ReweightLoss has no class counts yet. {AUTO_HINT}')
        self.check_placement()
        if cls_score.shape[-1] != len(self.class_weight):
            raise ValueError(f'cls_score has {cls_score.shape[-1]} channels but the '
                             f'counts give {len(self.class_weight) - 1} classes + '
                             'background')
        return super().forward(cls_score, label, *args, **kwargs)

    def extra_repr(self) -> str:
        return f'mode={self.mode}, beta={self.beta}, bg_weight={self.bg_weight}'
