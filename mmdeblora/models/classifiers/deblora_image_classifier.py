"""mmpretrain's ``ImageClassifier`` with the de-biasing interface (the classifier side).

An instance is an image (an object crop); its feature is the pooled neck output that the
linear head classifies, L2-normalised. A head whose input holds several rows per image
(``CLoRAClsHead``: one per cLoRA route) says which is the image's own through
``instance_view(x, labels)``. Before ``enter_debias_stage`` it is exactly
``ImageClassifier``; after it, every step adds ``loss_deblora_feat``
(``mmdeblora.models.debias_mixin``).
"""
from typing import Sequence, Tuple

import torch
from mmpretrain.models import ImageClassifier
from mmpretrain.registry import MODELS
from torch import Tensor

from mmdeblora.deblora import pool_feats
from mmdeblora.models.debias_mixin import DebiasMixin


@MODELS.register_module()
class DebLoRAImageClassifier(DebiasMixin, ImageClassifier):
    """ImageClassifier with the de-biasing interface and the stage-2 feature loss."""

    def _debias_family_check(self) -> None:
        if not hasattr(getattr(self, 'head', None), 'num_classes'):
            raise TypeError(f'{type(self).__name__} needs a classification head with '
                            'num_classes (e.g. LinearClsHead)')

    @property
    def debias_num_classes(self) -> int:
        return self.head.num_classes

    def debias_features(self, feats, data_samples: Sequence, pool: str = 'avg',
                        normalize: bool = True) -> Tuple[Tensor, Tensor]:
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        labels = torch.cat([s.gt_label for s in data_samples]).long().to(x.device)
        view = getattr(self.head, 'instance_view', None)
        if view is not None:  # several rows per image (cLoRA's routes): the true class's
            x = view(x, labels)
        return pool_feats(x, pool, normalize), labels

    def _debias_augment_check(self, stage2, pool=None) -> None:
        if hasattr(self.head, 'instance_view'):
            raise TypeError(f'DebLoRAHook.mode={stage2.mode!r} needs one feature row per '
                            f'image; {type(self.head).__name__} has several (cLoRA routes)')
        if not hasattr(self.head, 'pre_logits'):
            raise TypeError(f'DebLoRAHook.mode={stage2.mode!r} needs a head with '
                            f'pre_logits (e.g. LinearClsHead), got {type(self.head).__name__}')

    def debias_augment_loss(self, feats, data_samples: Sequence) -> Tensor:
        """The head's own loss on calibrated copies of the calibrated images' pooled
        features (detached: the head trains, the backbone does not)."""
        plan = self.debias_plan
        x = (feats[-1] if isinstance(feats, (tuple, list)) else feats).detach()
        if x.dim() != 2:
            raise ValueError(f'DebLoRAHook.mode={"augment"!r} needs pooled [N, C] features '
                             f'before the head (a GlobalAveragePooling neck), got shape '
                             f'{tuple(x.shape)}')
        labels = torch.cat([s.gt_label for s in data_samples]).long().to(x.device)
        cal = plan.instance_calibrated(labels)
        if not cal.any():  # still connected to the head's parameters (DDP)
            return sum(p.sum() for p in self.head.parameters() if p.requires_grad) * 0
        idx = cal.nonzero().flatten().tolist()
        copies = plan.calibrated_copies(x[cal], labels[cal])
        losses = self.head.loss((copies, ), [data_samples[i] for i in idx])
        scale = plan.augment_scale(len(idx), len(data_samples))
        return scale * sum(v for k, v in losses.items() if 'loss' in k)
