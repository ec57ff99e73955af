"""Stage-2 debLoRA detector: FasterRCNN (mmrotate's Oriented R-CNN) plus a feature loss.

Once ``set_debias`` has given it the de-biased class centers h_c and alpha_c, every GT
instance of a training batch adds ``loss_weight / loss_scale * ||z - z_hat||^2`` (squared
error summed over the feature dims, averaged over instances), where z is its RoI feature under the
current (debLoRA) model and z_hat = (1 - alpha_c) z1 + alpha_c h_c its calibrated target.

Why targets are computed online: z1 is the stage-1 feature of *the same augmented
instance*, recomputed each step without gradient under
``backbone.adapters_only(stage1_adapters)``. Precomputed targets would need instance
bookkeeping through every random flip / rotate / crop of the pipeline (and would be
wrong after any geometric augmentation); online targets cost one extra no-grad backbone
and neck pass per step and need none. z1 is exactly the stage-1 feature the centers
were computed from only while everything on the stage-1 path is frozen: the stage-1
adapter, the backbone's norms and the neck (DebLoRAHook's defaults).

Before ``set_debias`` (stage 1, or without the hook) it is exactly ``FasterRCNN``.
"""
from typing import Optional, Sequence, Tuple

import torch
from mmdet.models.detectors import FasterRCNN
from mmdet.structures import SampleList
from mmrotate.registry import MODELS
from torch import Tensor

from mmdeblora.deblora import calibrate, gt_instance_features


@MODELS.register_module()
class DebLoRAFasterRCNN(FasterRCNN):
    """FasterRCNN with the optional debLoRA feature loss (``loss_deblora_feat``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._debias: Optional[dict] = None
        self._captured: Optional[list] = None

    # ------------------------------------------------------------------ state
    @property
    def debias_enabled(self) -> bool:
        return self._debias is not None

    def set_debias(self, class_centers: Tensor, alphas: Tensor, loss_weight: float = 1.0,
                   pool: str = 'avg', normalize: bool = True,
                   stage1_adapters: Sequence[str] = ('default',),
                   loss_scale: float = 1.0) -> None:
        """Switch the feature loss on (called by DebLoRAHook at the stage switch).

        The loss is divided by ``loss_scale`` (the hook passes the mean calibration gap
        ||z - z_hat||^2 of the extracted instances, so the loss starts near
        ``loss_weight`` whatever the backbone's feature geometry).
        """
        if loss_scale <= 0:
            raise ValueError(f'loss_scale must be > 0, got {loss_scale}')
        if not hasattr(self.backbone, 'adapters_only'):
            raise TypeError('the debLoRA feature loss needs a LoRABackbone, got '
                            f'{type(self.backbone).__name__}')
        if class_centers.shape[0] != alphas.shape[0]:
            raise ValueError(f'{class_centers.shape[0]} class centers but '
                             f'{alphas.shape[0]} alphas')
        num_classes = self.roi_head.bbox_head.num_classes
        if class_centers.shape[0] != num_classes:
            raise ValueError(f'{class_centers.shape[0]} class centers for a detector with '
                             f'{num_classes} classes')
        self._debias = dict(class_centers=class_centers.detach().float(),
                            alphas=alphas.detach().float(), loss_weight=float(loss_weight),
                            pool=pool, normalize=bool(normalize),
                            stage1_adapters=list(stage1_adapters),
                            loss_scale=float(loss_scale))

    def clear_debias(self) -> None:
        self._debias = None

    # ------------------------------------------------------------------ forward
    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor]:
        x = super().extract_feat(batch_inputs)
        if self._captured is not None:
            self._captured.append(x)
        return x

    @torch.no_grad()
    def feature_targets(self, batch_inputs: Tensor,
                        batch_data_samples: SampleList) -> Tensor:
        """Calibrated targets z_hat [N, D] of the batch's GT instances (no gradient)."""
        d = self._debias
        with self.backbone.adapters_only(d['stage1_adapters']):
            feats = super().extract_feat(batch_inputs)
        z1, labels = gt_instance_features(self, feats, batch_data_samples, d['pool'],
                                          d['normalize'])
        return calibrate(z1, labels, d['class_centers'].to(z1.device),
                         d['alphas'].to(z1.device))

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> dict:
        if self._debias is None:
            return super().loss(batch_inputs, batch_data_samples)
        d = self._debias
        targets = self.feature_targets(batch_inputs, batch_data_samples)
        self._captured = []
        try:
            losses = super().loss(batch_inputs, batch_data_samples)
            feats = self._captured[0]
        finally:
            self._captured = None
        z, _ = gt_instance_features(self, feats, batch_data_samples, d['pool'],
                                    d['normalize'])
        if z.shape[0]:
            loss = ((z - targets) ** 2).sum(1).mean()
        else:  # no GT in the batch: keep the graph connected for DDP
            loss = z.sum() * 0
        losses['loss_deblora_feat'] = d['loss_weight'] / d['loss_scale'] * loss
        return losses
