"""The detector side of the de-biasing interface, for mmdet's two-stage detectors.

An instance is a GT box; its feature is what the (last) box head sees for it: the neck's
maps pooled inside the rotated GT box by the detector's own RoI extractor
(``mmdeblora.deblora.gt_instance_features``). Oriented R-CNN (``FasterRCNN`` + a rotated
RoI head) and RoI Transformer (``CascadeRCNN``, features from the last stage's rotated
RoI extractor) are covered.
"""
from typing import Sequence, Tuple

import torch
from torch import Tensor

from mmdeblora.deblora import gt_instance_features, gt_rois, roi_extractor
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

    def _last_bbox_head(self):
        head = self.roi_head.bbox_head
        return head[-1] if isinstance(head, torch.nn.ModuleList) else head

    def _debias_augment_check(self, stage2, pool=None) -> None:
        if pool not in (None, 'avg'):
            raise ValueError(f"DebLoRAHook.mode={stage2.mode!r} on a detector needs pool='avg' "
                             f'(a shift of the RoI map moves its average), got {pool!r}')
        if not hasattr(self._last_bbox_head(), 'loss_cls'):
            raise TypeError(f'DebLoRAHook.mode={stage2.mode!r} needs a box head with '
                            'loss_cls')

    def debias_augment_loss(self, feats, data_samples: Sequence) -> Tensor:
        """The (last) box head's classification loss on calibrated copies of the RoI
        features of the batch's calibrated GT boxes: each RoI map shifted so that its
        average (the instance feature before normalisation) becomes its calibrated copy.
        Features detached: the box head trains."""
        plan = self.debias_plan
        if plan.pool != 'avg':
            raise ValueError(f"DebLoRAHook.mode augment on a detector needs pool='avg' "
                             f'(a shift of the RoI map moves its average), got {plan.pool!r}')
        head = self._last_bbox_head()
        labels = torch.cat([s.gt_instances.labels for s in data_samples]).long()
        cal = plan.instance_calibrated(labels)
        if not cal.any():  # still connected to the head's parameters (DDP)
            return sum(p.sum() for p in head.parameters() if p.requires_grad) * 0
        extractor = roi_extractor(self)
        rois = gt_rois([s.gt_instances.bboxes for s in data_samples]).to(feats[0].device)
        cal = cal.to(rois.device)
        maps = extractor(tuple(f.detach() for f in feats[:extractor.num_inputs]), rois[cal])
        x = maps.mean((2, 3))
        shift = plan.calibrated_copies(x, labels.to(x.device)[cal]) - x
        cls_score = head(maps + shift[:, :, None, None])[0]
        loss = head.loss_cls(cls_score, labels.to(x.device)[cal])
        loss = sum(loss.values()) if isinstance(loss, dict) else loss
        return plan.augment_scale(len(x), self.sampled_rois(len(data_samples))) * loss

    def sampled_rois(self, images: int) -> int:
        """The RoIs the (last) box head's classification loss averages over in a batch of
        ``images``: the R-CNN sampler's ``num`` per image (what it fills with 2000
        proposals; a batch with fewer proposals averages over fewer)."""
        rcnn = (self.train_cfg or {}).get('rcnn', {})
        if isinstance(rcnn, (list, tuple)):
            rcnn = rcnn[-1]
        num = (rcnn.get('sampler') or {}).get('num')
        if num is None:
            raise ValueError("DebLoRAHook.augment_reduction='sample' needs the detector's "
                             "train_cfg.rcnn.sampler.num (the RoIs a box head's loss "
                             "averages over); set augment_reduction='mean' otherwise")
        return int(num) * images
