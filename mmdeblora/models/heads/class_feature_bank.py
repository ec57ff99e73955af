"""A per-class ring buffer of recent (detached) features, shared by the heads that need
class statistics of the training features during training (SMOTE, DRO-LT).

Why a bank and not a pass over the training set: both methods need, at every step,
features of classes that are rarely or never in the batch (a tail class with 10 training
crops appears in about one batch in six). A bank of the last ``size`` features per class
holds every training feature of a tail class after one epoch (at most one epoch old) and
the most recent ``size`` features of a head class, at no extra forward pass. Buffers are
saved in checkpoints, so a resumed run continues with the same bank.
"""
from typing import Tuple

import torch
from torch import Tensor, nn


class ClassFeatureBank(nn.Module):
    """``size`` most recent features of each of ``num_classes`` classes (dim ``dim``).

    Args:
        num_classes: number of classes.
        dim: feature dimension.
        size: features kept per class (oldest replaced first).
    """

    def __init__(self, num_classes: int, dim: int, size: int = 64) -> None:
        super().__init__()
        for key, value in (('num_classes', num_classes), ('dim', dim), ('size', size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'ClassFeatureBank.{key} must be a positive integer, '
                                 f'got {value!r}')
        self.num_classes, self.dim, self.size = num_classes, dim, size
        self.register_buffer('feats', torch.zeros(num_classes, size, dim))
        self.register_buffer('filled', torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer('ptr', torch.zeros(num_classes, dtype=torch.long))

    @torch.no_grad()
    def update(self, feats: Tensor, labels: Tensor) -> None:
        """Push ``feats`` [N, dim] (detached) under their ``labels`` [N], in batch order."""
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f'ClassFeatureBank expects features [N, {self.dim}], got '
                             f'{tuple(feats.shape)}')
        feats = feats.detach().to(self.feats)
        labels = labels.long().to(self.filled.device)
        for c in labels.unique().tolist():
            if not 0 <= c < self.num_classes:
                raise ValueError(f'label {c} out of range for {self.num_classes} classes')
            x = feats[labels == c][-self.size:]
            n = x.shape[0]
            slots = (self.ptr[c] + torch.arange(n, device=self.ptr.device)) % self.size
            self.feats[c, slots] = x
            self.ptr[c] = (self.ptr[c] + n) % self.size
            self.filled[c] = torch.clamp(self.filled[c] + n, max=self.size)

    def class_features(self, c: int) -> Tensor:
        """The stored features of class ``c`` [filled_c, dim] (order not meaningful)."""
        return self.feats[c, :int(self.filled[c])]

    def class_means(self) -> Tuple[Tensor, Tensor]:
        """Mean stored feature per class [C, dim] and which classes have any [C] (bool)."""
        valid = self.filled > 0
        idx = torch.arange(self.size, device=self.feats.device)
        mask = (idx[None, :] < self.filled[:, None]).to(self.feats)
        means = (self.feats * mask[..., None]).sum(1) / mask.sum(1).clamp(min=1)[:, None]
        return means, valid

    def extra_repr(self) -> str:
        return f'num_classes={self.num_classes}, dim={self.dim}, size={self.size}'
