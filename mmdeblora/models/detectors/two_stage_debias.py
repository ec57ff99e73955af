"""The detector side of the de-biasing interface, for mmdet's two-stage detectors.

An instance is a GT box; its feature is what the (last) box head sees for it: the neck's
maps pooled inside the rotated GT box by the detector's own RoI extractor
(``mmdeblora.deblora.gt_instance_features``). Oriented R-CNN (``FasterRCNN`` + a rotated
RoI head) and RoI Transformer (``CascadeRCNN``, features from the last stage's rotated
RoI extractor) are covered.
"""
import copy
from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor

from mmdeblora.deblora import gt_instance_features
from mmdeblora.models.debias_mixin import DebiasMixin


class TwoStageDebiasMixin(DebiasMixin):
    """``DebiasMixin`` for ``TwoStageDetector`` subclasses."""

    def _debias_family_check(self) -> None:
        roi_head = getattr(self, 'roi_head', None)
        if roi_head is None or not hasattr(roi_head, 'bbox_roi_extractor'):
            raise TypeError(f'{type(self).__name__} needs an RoI head with a '
                            'bbox_roi_extractor (the instance features are RoI features '
                            'of the GT boxes)')

    @property
    def debias_num_classes(self) -> int:
        head = self.roi_head.bbox_head
        return (head[-1] if isinstance(head, torch.nn.ModuleList) else head).num_classes

    def debias_features(self, feats, data_samples: Sequence, pool: str = 'avg',
                        normalize: bool = True) -> Tuple[Tensor, Tensor]:
        return gt_instance_features(self, feats, data_samples, pool, normalize)

    def debias_task_loss(self, feats, data_samples: Sequence) -> Dict[str, Tensor]:
        """``TwoStageDetector.loss`` on given features (mmdet has no such entry point):
        the RPN loss on class-agnostic copies of the samples, then the RoI head's loss,
        called exactly as upstream does."""
        losses = dict()
        if self.with_rpn:
            proposal_cfg = self.train_cfg.get('rpn_proposal', self.test_cfg.rpn)
            rpn_samples = copy.deepcopy(data_samples)
            for sample in rpn_samples:
                sample.gt_instances.labels = torch.zeros_like(sample.gt_instances.labels)
            rpn_losses, proposals = self.rpn_head.loss_and_predict(
                feats, rpn_samples, proposal_cfg=proposal_cfg)
            for key in list(rpn_losses):
                if 'loss' in key and 'rpn' not in key:
                    rpn_losses[f'rpn_{key}'] = rpn_losses.pop(key)
            losses.update(rpn_losses)
        else:
            proposals = [sample.proposals for sample in data_samples]
        losses.update(self.roi_head.loss(feats, proposals, data_samples))
        return losses
