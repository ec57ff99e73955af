"""Instance features of ground-truth boxes: the detector's own rotated RoI features.

The feature of an instance is what the box head sees for it: the neck's maps pooled
inside the (rotated) GT box by the detector's ``roi_head.bbox_roi_extractor``, reduced to a
vector (``avg``/``max`` over the RoI grid, or ``flatten``), optionally L2-normalised (the
paper's analysis is in cosine geometry, and K-means on unit vectors is spherical-like).

Duck-typed on mmdet's two-stage detectors (``roi_head.bbox_roi_extractor``; a cascade
head such as RoI Transformer's has one extractor per stage and the last one, the one that
pools the rotated RoIs, is used) so this module imports torch only. Extraction and the
stage-2 loss both go through ``gt_instance_features``, so they see the same feature.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

POOLS = ('avg', 'max', 'flatten')


def _box_tensor(boxes) -> Tensor:
    return boxes.tensor if hasattr(boxes, 'tensor') else torch.as_tensor(boxes)


def gt_rois(boxes_list: Sequence) -> Tensor:
    """RoIs [N, 1 + box_dim] with the image index in front (mmdet's bbox2roi layout)."""
    rois = []
    for i, boxes in enumerate(boxes_list):
        b = _box_tensor(boxes)
        rois.append(torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1))
    return torch.cat(rois)


def pool_roi_feats(roi_feats: Tensor, pool: str = 'avg') -> Tensor:
    """[N, C, h, w] -> [N, D]; a [N, D] input (already pooled) is returned as it is."""
    if pool not in POOLS:
        raise ValueError(f'pool must be one of {POOLS}, got {pool!r}')
    if roi_feats.dim() == 2:
        return roi_feats
    if pool == 'avg':
        return roi_feats.mean((2, 3))
    if pool == 'max':
        return roi_feats.amax((2, 3))
    return roi_feats.flatten(1)


def pool_feats(feats: Tensor, pool: str = 'avg', normalize: bool = True) -> Tensor:
    """One vector per instance, L2-normalised when asked (the method's feature z)."""
    z = pool_roi_feats(feats, pool)
    return F.normalize(z, dim=1) if normalize else z


def roi_extractor(detector: nn.Module) -> nn.Module:
    """The RoI extractor whose pooled features the (last) box head classifies."""
    extractor = detector.roi_head.bbox_roi_extractor
    if isinstance(extractor, nn.ModuleList):  # cascade heads: one per stage
        extractor = extractor[-1]
    return extractor


def gt_instance_features(detector: nn.Module, feats: Tuple[Tensor], data_samples: Sequence,
                         pool: str = 'avg', normalize: bool = True
                         ) -> Tuple[Tensor, Tensor]:
    """Features [N, D] and labels [N] of every GT instance of the batch, in batch order."""
    extractor = roi_extractor(detector)
    boxes = [s.gt_instances.bboxes for s in data_samples]
    labels = torch.cat([s.gt_instances.labels for s in data_samples]).long()
    rois = gt_rois(boxes).to(feats[0].device)
    if rois.shape[0] == 0:
        dim = extractor.out_channels
        shape = extractor.roi_layers[0].output_size
        d = dim * shape[0] * shape[1] if pool == 'flatten' else dim
        return feats[0].new_zeros(0, d), labels.to(feats[0].device)
    z = pool_feats(extractor(feats[:extractor.num_inputs], rois), pool, normalize)
    return z, labels.to(z.device)


def cap_per_class(labels: Tensor, max_per_class: Optional[int], seed: int = 0) -> Tensor:
    """Indices (sorted) keeping at most ``max_per_class`` instances per class, seeded."""
    if max_per_class is None:
        return torch.arange(labels.numel())
    if max_per_class < 1:
        raise ValueError(f'max_per_class must be >= 1 or None, got {max_per_class}')
    gen = torch.Generator().manual_seed(seed)
    keep = []
    labels = labels.cpu()
    for c in torch.unique(labels):
        idx = (labels == c).nonzero().flatten()
        if idx.numel() > max_per_class:
            idx = idx[torch.randperm(idx.numel(), generator=gen)[:max_per_class]]
        keep.append(idx)
    return torch.cat(keep).sort().values if keep else torch.zeros(0, dtype=torch.long)
