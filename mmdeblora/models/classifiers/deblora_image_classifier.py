"""mmpretrain's ``ImageClassifier`` with the de-biasing interface (the classifier side).

An instance is an image (an object crop); its feature is the pooled neck output that the
linear head classifies, L2-normalised. A head whose input holds several rows per image
(``CLoRAClsHead``: one per cLoRA route) says which is the image's own through
``instance_view(x, labels)``. Before ``enter_debias_stage`` it is exactly
``ImageClassifier``; after it, every step adds ``loss_deblora_feat``
(``mmdeblora.models.debias_mixin``).
"""
from typing import Dict, Sequence, Tuple

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

    def debias_task_loss(self, feats, data_samples: Sequence) -> Dict[str, Tensor]:
        return self.head.loss(feats, data_samples)
