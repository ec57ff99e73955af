"""LoRA + ResLT (Cui et al., "ResLT: Residual Learning for Long-tailed Recognition", TPAMI
2022) as a classification head: the classification form of ``ResLTBBoxHead``.

It reuses the detection head's ``ResLTClassifier`` (three branches H / M / T on the shared
feature and one shared linear classifier) and the same loss,
L = beta * L_ice + (1 - beta) * L_fce, with L_fce = CE(z_H + z_M + z_T, y) and
L_ice = sum_b sum_{i: y_i in G_b} CE(z_b,i, y_i) / (|G_H| + |G_M| + |G_T|), the official
code's denominator (see docs/baselines.md, "ResLT"). What differs from detection: there is
no background class (C outputs per branch, not C + 1) and no box regression; the branches
act on the pooled feature the linear head classifies.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch import Tensor

from mmdeblora.models.roi_heads.reslt_bbox_head import (BRANCHES, ResLTClassifier,
                                                        reslt_branch_classes)


@MODELS.register_module()
class ResLTClsHead(LinearClsHead):
    """``LinearClsHead`` with ResLT's three branches; predictions use z_H + z_M + z_T.

    Args:
        beta: weight of L_ice (the paper: 0.85-0.998 by data set; detection default 0.9).
        groups: ``'auto'`` (filled in by ``ClassStatsHook.set_class_groups``) or a dict
            ``{'middle': [class indices], 'tail': [class indices]}``.
        branch_type / test_weight_norm_gamma: see ``ResLTClassifier``.
    """

    def __init__(self, num_classes: int, in_channels: int, beta: float = 0.9,
                 groups: Union[str, Dict[str, Sequence[int]]] = 'auto',
                 branch_type: str = 'bn', test_weight_norm_gamma: Optional[float] = None,
                 **kwargs) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, **kwargs)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f'ResLTClsHead.beta must be in [0, 1], got {beta}')
        if getattr(self.loss_module, 'use_sigmoid', False):
            raise ValueError('ResLTClsHead needs a softmax loss (e.g. CrossEntropyLoss)')
        self.beta = beta
        self.fc = ResLTClassifier(self.fc, branch_type, test_weight_norm_gamma)
        self.register_buffer('branch_classes', None, persistent=False)
        if groups != 'auto':
            if not isinstance(groups, dict):
                raise ValueError(f"ResLTClsHead.groups must be 'auto' or a dict of class "
                                 f'indices, got {groups!r}')
            self.set_class_groups(groups)

    def init_weights(self) -> None:
        super().init_weights()
        self.fc.reset_branches()  # after the Normal(std=0.01) init_cfg on Linear layers

    def set_class_groups(self, groups: Dict[str, Sequence[int]]) -> None:
        self.branch_classes = reslt_branch_classes(groups, self.num_classes)

    def branch_logits(self, feats: Tuple[Tensor]) -> List[Tensor]:
        """[z_H, z_M, z_T], each (N, C)."""
        return list(self.fc(self.pre_logits(feats)).chunk(len(BRANCHES), dim=1))

    def forward(self, feats: Tuple[Tensor]) -> Tensor:
        return torch.stack(self.branch_logits(feats)).sum(0)

    def loss(self, feats: Tuple[Tensor], data_samples: List[DataSample], **kwargs) -> dict:
        if self.branch_classes is None:
            raise RuntimeError(
                "ResLTClsHead(groups='auto') has no class groups yet: add "
                "custom_hooks=[dict(type='ClassStatsHook', groups=...)] or give "
                'groups=dict(middle=[...], tail=[...]) as class indices')
        target = torch.cat([s.gt_label for s in data_samples]).long()
        logits = self.branch_logits(feats)
        target = target.to(logits[0].device)
        masks = self.branch_classes.to(target.device)[:, target].float()  # (3, N)
        ice = logits[0].new_zeros(())
        for z, m in zip(logits, masks):
            ice = ice + (self.loss_module(z, target, reduction_override='none') * m).sum()
        ice = ice / masks.sum().clamp(min=1.0)
        fused = torch.stack(logits).sum(0)
        fce = self.loss_module(fused, target, avg_factor=fused.shape[0], **kwargs)
        return dict(loss=self.beta * ice + (1 - self.beta) * fce)
