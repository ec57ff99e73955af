"""A per-class ring buffer of recent (detached) features, shared by the heads that need
class statistics of the training features during training (SMOTE, DRO-LT).

Why a bank and not a pass over the training set: both methods need, at every step,
features of classes that are rarely or never in the batch (a tail class with 10 training
crops appears in about one batch in six), at no extra forward pass. Buffers are saved in
checkpoints, so a resumed run continues with the same bank.

What it holds. By default (``unique=False``) the last ``size`` features pushed for each
class. For a class with more than ``size`` training samples these are ``size`` recent,
distinct samples; for a class with n_c < ``size`` samples they are about ``size / n_c``
views of *each* sample (one per epoch, other augmentations), the oldest ``size / n_c``
epochs old (64 entries of a 10-crop class span 6.4 epochs). With ``unique=True`` the bank
is keyed by the data set index (``sample_idx``): a sample seen again replaces its own
entry, so a class with n_c <= ``size`` samples holds exactly one entry per sample, the
latest (at most one epoch old), and a larger class a ring of ``size`` distinct samples.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor, nn


class ClassFeatureBank(nn.Module):
    """``size`` most recent features of each of ``num_classes`` classes (dim ``dim``).

    Args:
        num_classes: number of classes.
        dim: feature dimension.
        size: features kept per class (oldest replaced first).
        unique: one entry per sample, keyed by the index given to :meth:`update`.
    """

    def __init__(self, num_classes: int, dim: int, size: int = 64,
                 unique: bool = False) -> None:
        super().__init__()
        for key, value in (('num_classes', num_classes), ('dim', dim), ('size', size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'ClassFeatureBank.{key} must be a positive integer, '
                                 f'got {value!r}')
        self.num_classes, self.dim, self.size = num_classes, dim, size
        self.register_buffer('feats', torch.zeros(num_classes, size, dim))
        self.register_buffer('filled', torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer('ptr', torch.zeros(num_classes, dtype=torch.long))
        self.unique = bool(unique)
        if self.unique:  # the sample index of each entry (-1: empty)
            self.register_buffer('ids', torch.full((num_classes, size), -1, dtype=torch.long))

    @torch.no_grad()
    def update(self, feats: Tensor, labels: Tensor, ids: Optional[Tensor] = None) -> None:
        """Push ``feats`` [N, dim] (detached) under their ``labels`` [N], in batch order;
        ``ids`` [N]: the samples' data set indices (required with ``unique``)."""
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f'ClassFeatureBank expects features [N, {self.dim}], got '
                             f'{tuple(feats.shape)}')
        feats = feats.detach().to(self.feats)
        labels = labels.long().to(self.filled.device)
        if self.unique and (ids is None or len(ids) != len(labels)):
            raise ValueError('ClassFeatureBank(unique=True) needs the sample index of every '
                             'feature (ids)')
        for c in labels.unique().tolist():
            if not 0 <= c < self.num_classes:
                raise ValueError(f'label {c} out of range for {self.num_classes} classes')
            if self.unique:
                self._update_unique(c, feats[labels == c],
                                    ids.long().to(self.ids.device)[labels == c])
                continue
            x = feats[labels == c][-self.size:]
            n = x.shape[0]
            slots = (self.ptr[c] + torch.arange(n, device=self.ptr.device)) % self.size
            self.feats[c, slots] = x
            self.ptr[c] = (self.ptr[c] + n) % self.size
            self.filled[c] = torch.clamp(self.filled[c] + n, max=self.size)

    def _update_unique(self, c: int, x: Tensor, ids: Tensor) -> None:
        """A sample already in the bank replaces its own entry; a new one the oldest slot."""
        for feat, i in zip(x, ids.tolist()):
            n = int(self.filled[c])
            hit = (self.ids[c, :n] == i).nonzero()
            if len(hit):
                slot = int(hit[0, 0])
            else:
                slot = int(self.ptr[c])
                self.ptr[c] = (slot + 1) % self.size
                self.filled[c] = min(n + 1, self.size)
            self.feats[c, slot], self.ids[c, slot] = feat, i

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
        return (f'num_classes={self.num_classes}, dim={self.dim}, size={self.size}, '
                f'unique={self.unique}')
