"""ResLT (Cui et al., "ResLT: Residual Learning for Long-tailed Recognition", TPAMI 2022)
as the RoI classifier of a rotated two-stage detector."""
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmdet.models.losses import accuracy
from mmrotate.models.roi_heads.bbox_heads import RotatedShared2FCBBoxHead
from mmrotate.registry import MODELS
from torch import Tensor

BRANCHES = ('head', 'middle', 'tail')  # H = all classes, M = middle + tail, T = tail
WHERE_IT_FITS = (
    'ResLTBBoxHead is the RoI classifier of a two-stage detector with a single RoI stage '
    '(mmdet StandardRoIHead: Oriented R-CNN, rotated Faster R-CNN): set it at '
    'model.roi_head.bbox_head; see docs/baselines.md')
NOT_DENSE = ('ResLTBBoxHead was built with train_cfg / test_cfg, which one-stage detectors '
             'pass to model.bbox_head: it is not a dense head. ' + WHERE_IT_FITS)
NOT_CASCADE = ('ResLTBBoxHead in a cascade RoI head (model.roi_head.bbox_head.<i> of '
               'Cascade R-CNN / RoI Transformer) is not supported: the cascade refines boxes '
               'and averages stage scores on the three unfused branch blocks, so boxes and '
               'scores would be silently wrong. ' + WHERE_IT_FITS)


def reslt_branch_classes(groups: Dict[str, Sequence[int]], num_classes: int,
                         num_columns: Optional[int] = None) -> Tensor:
    """(3, num_columns) bool: which classes each branch learns (H: all, M: middle + tail,
    T: tail). ``num_columns`` > ``num_classes`` leaves the extra columns (detection's
    background) in H only; a class in no group counts as head."""
    mask = torch.zeros(len(BRANCHES), num_columns or num_classes, dtype=torch.bool)
    mask[0] = True
    for g, idx in groups.items():
        if g not in BRANCHES:
            raise ValueError(f'unknown group {g!r}; use {BRANCHES}')
        idx = list(idx)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise ValueError(f'group {g!r} must list class indices, got {idx}; for class '
                             "names use groups='auto' with "
                             'ClassStatsHook(groups={...names...})')
        if any(not 0 <= i < num_classes for i in idx):
            raise ValueError(f'group {g!r} has class indices outside [0, {num_classes}): '
                             f'{idx}')
        if g in ('middle', 'tail'):
            mask[1, idx] = True
        if g == 'tail':
            mask[2, idx] = True
    return mask


class ResLTClassifier(nn.Module):
    """Three light branches on the shared feature, one shared linear classifier.

    ``forward`` returns the three branch logits concatenated, ``(N, 3 * (C + 1))``
    ordered [z_H | z_M | z_T]; the head fuses them. ``branch_type='bn'``: one
    BatchNorm1d per branch (the official code's three BatchNorm layers);
    ``'linear'``: one Linear(d, 3d) split in three (its 1x1-layer variant).
    ``test_weight_norm_gamma``: in eval mode the classifier rows are divided by
    ``||W_c||^gamma`` (the official test-time rescaling); ``None`` keeps W.
    """

    def __init__(self, fc: nn.Linear, branch_type: str = 'bn',
                 test_weight_norm_gamma: Optional[float] = None) -> None:
        super().__init__()
        d = fc.in_features
        if branch_type == 'bn':
            self.branches = nn.ModuleList(nn.BatchNorm1d(d) for _ in BRANCHES)
        elif branch_type == 'linear':
            self.branches = nn.Linear(d, len(BRANCHES) * d)
        else:
            raise ValueError(f"branch_type must be 'bn' or 'linear', got {branch_type!r}")
        self.branch_type = branch_type
        self.fc = fc
        self.test_weight_norm_gamma = test_weight_norm_gamma

    def reset_branches(self) -> None:
        """Identity-like start (BN: weight 1, bias 0); re-run after the head's
        ``init_cfg`` because its Normal(std=0.01) override on ``fc_cls`` reaches here."""
        if self.branch_type == 'bn':
            for bn in self.branches:
                bn.reset_parameters()
        else:
            nn.init.xavier_uniform_(self.branches.weight)
            nn.init.zeros_(self.branches.bias)

    def branch_features(self, x: Tensor) -> List[Tensor]:
        if self.branch_type == 'bn':
            return [bn(x) for bn in self.branches]
        return list(self.branches(x).chunk(len(BRANCHES), dim=1))

    def forward(self, x: Tensor) -> Tensor:
        weight = self.fc.weight
        gamma = self.test_weight_norm_gamma
        if not self.training and gamma is not None:
            weight = weight / weight.norm(dim=1, keepdim=True).clamp(min=1e-12).pow(gamma)
        return torch.cat([nn.functional.linear(f, weight, self.fc.bias)
                          for f in self.branch_features(x)], dim=1)


@MODELS.register_module()
class ResLTBBoxHead(RotatedShared2FCBBoxHead):
    """mmrotate's rotated Shared2FC head with a ResLT classifier.

    The shared fc feature goes through three branches (H: all classes, M: middle +
    tail, T: tail) and one shared classifier gives z_H, z_M, z_T; the prediction is
    z_H + z_M + z_T. Training loss, with CE the head's ``loss_cls`` (softmax CE):
    L = beta * L_ice + (1 - beta) * L_fce, L_fce = CE(z_H + z_M + z_T, y) averaged as
    mmdet averages (over RoIs with positive label weight), L_ice = sum over branches
    b of CE(z_b, y) over the RoIs whose label is in G_b, divided by
    |G_H| + |G_M| + |G_T| (the numbers of such RoIs), as the official code does.

    Detection choices: branches act on the RoI head's shared fc feature (the
    equivalent of the classification network's last feature); background RoIs belong
    to group H only (background is the most frequent "class"); a class in no group is
    treated as head; box regression is upstream's, unchanged.

    Args:
        beta: weight of L_ice (the paper uses 0.85-0.998 depending on the data set).
        groups: ``'auto'`` (filled in by ``ClassStatsHook.set_class_groups``) or a
            dict ``{'middle': [class indices], 'tail': [class indices]}`` (``'head'``
            may be given; it changes nothing since H holds every class).
        branch_type / test_weight_norm_gamma: see :class:`ResLTClassifier`.
    """

    def __init__(self, *args, beta: float = 0.9,
                 groups: Union[str, Dict[str, Sequence[int]]] = 'auto',
                 branch_type: str = 'bn',
                 test_weight_norm_gamma: Optional[float] = None, **kwargs) -> None:
        if {'train_cfg', 'test_cfg'} & set(kwargs):
            raise ValueError(NOT_DENSE)
        super().__init__(*args, **kwargs)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f'beta must be in [0, 1], got {beta}')
        # a softmax over C + 1 channels: ReweightLoss asks for them (custom_cls_channels,
        # which only proves it sits in an RoI head) and keeps upstream's activation
        if self.custom_activation or getattr(self.loss_cls, 'use_sigmoid', False) or (
                self.custom_cls_channels
                and self.loss_cls.get_cls_channels(self.num_classes) != self.num_classes + 1):
            raise ValueError('ResLTBBoxHead needs a softmax loss_cls over C + 1 channels '
                             f'(e.g. CrossEntropyLoss), got {type(self.loss_cls).__name__}')
        if not self.with_cls:
            raise ValueError('ResLTBBoxHead needs with_cls=True')
        self.beta = beta
        self.fc_cls = ResLTClassifier(self.fc_cls, branch_type, test_weight_norm_gamma)
        self.register_buffer('branch_classes', None, persistent=False)
        if groups != 'auto':
            if not isinstance(groups, dict):
                raise ValueError(f"groups must be 'auto' or a dict of class indices, "
                                 f'got {groups!r}')
            self.set_class_groups(groups)

    def init_weights(self) -> None:
        super().init_weights()
        self.fc_cls.reset_branches()

    def set_class_groups(self, groups: Dict[str, Sequence[int]]) -> None:
        """Branch membership (3, C + 1) of each class; background only in H."""
        self.branch_classes = reslt_branch_classes(groups, self.num_classes,
                                                   self.num_classes + 1)

    def branch_masks(self, labels: Tensor) -> Tensor:
        """(3, N) bool: which RoIs each branch learns from, by their labels."""
        if self.branch_classes is None:
            raise RuntimeError(
                "ResLTBBoxHead(groups='auto') has no class groups yet: add "
                "custom_hooks=[dict(type='ClassStatsHook', groups=...)] or give "
                'groups=dict(middle=[...], tail=[...]) as class indices')
        return self.branch_classes.to(labels.device)[:, labels]

    def split_logits(self, cls_score: Tensor) -> List[Tensor]:
        return list(cls_score.chunk(len(BRANCHES), dim=1))

    def fuse(self, cls_score: Tensor) -> Tensor:
        """z_H + z_M + z_T: the logits used for prediction and accuracy."""
        return torch.stack(self.split_logits(cls_score)).sum(0)

    def reslt_loss(self, cls_score: Tensor, labels: Tensor, label_weights: Tensor,
                   avg_factor: float) -> Tensor:
        logits = self.split_logits(cls_score)
        masks = self.branch_masks(labels).float() * (label_weights > 0).float()
        ice = cls_score.new_zeros(())
        for z, m in zip(logits, masks):
            ce = self.loss_cls(z, labels, label_weights, reduction_override='none')
            ice = ice + (ce * m).sum()
        ice = ice / masks.sum().clamp(min=1.0)
        fce = self.loss_cls(self.fuse(cls_score), labels, label_weights,
                            avg_factor=avg_factor)
        return self.beta * ice + (1 - self.beta) * fce

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor, labels: Tensor,
             label_weights: Tensor, bbox_targets: Tensor, bbox_weights: Tensor,
             reduction_override: Optional[str] = None) -> dict:
        losses = super().loss(None, bbox_pred, rois, labels, label_weights, bbox_targets,
                              bbox_weights, reduction_override)
        if cls_score is not None and cls_score.numel() > 0:
            avg_factor = max(torch.sum(label_weights > 0).float().item(), 1.)
            losses['loss_cls'] = self.reslt_loss(cls_score, labels, label_weights,
                                                 avg_factor)
            losses['acc'] = accuracy(self.fuse(cls_score), labels)
        return losses

    def check_placement(self, model: nn.Module, name: str) -> None:
        """Refuse to sit in a cascade RoI head (``name``: this head's name in ``model``).

        The head cannot see its parent when it is built: an earlier stage fails at the
        first training step (``refine_bboxes``), but the last stage would train a whole
        schedule and fail only at validation, where the cascade averages its stages'
        scores. ``CheckedRunner`` (guard ``component_checks``) calls this on the built
        model, before training."""
        from mmdet.models.roi_heads import CascadeRoIHead
        parts = name.split('.')
        for end in range(len(parts) - 1, -1, -1):
            if isinstance(model.get_submodule('.'.join(parts[:end])), CascadeRoIHead):
                raise ValueError(f'model.{name}: ' + NOT_CASCADE)

    def refine_bboxes(self, *args, **kwargs):
        """Only cascade RoI heads call this (between stages, in training)."""
        raise NotImplementedError(NOT_CASCADE)

    def regress_by_class(self, *args, **kwargs):
        """Only cascade RoI heads call this (between stages, at test time)."""
        raise NotImplementedError(NOT_CASCADE)

    def _predict_by_feat_single(self, roi: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                                img_meta: dict, rescale: bool = False,
                                rcnn_test_cfg: Optional[dict] = None):
        """Upstream's per-image prediction on the fused logits."""
        return super()._predict_by_feat_single(
            roi=roi, cls_score=self.fuse(cls_score), bbox_pred=bbox_pred,
            img_meta=img_meta, rescale=rescale, rcnn_test_cfg=rcnn_test_cfg)


def check_reslt_placement(model: nn.Module) -> None:
    """:meth:`ResLTBBoxHead.check_placement` of every ResLT head in ``model`` (what
    ``CheckedRunner``'s ``component_checks`` does for every part that has the method)."""
    for name, module in model.named_modules():
        if isinstance(module, ResLTBBoxHead):
            module.check_placement(model, name)
