"""Oriented R-CNN (mmdet ``FasterRCNN`` with mmrotate's rotated RoI head) with debLoRA.

Before ``enter_debias_stage`` (stage 1, or without ``DebLoRAHook``) it is exactly
``FasterRCNN``; after it, every step adds ``loss_deblora_feat`` (see
``mmdeblora.models.debias_mixin``).
"""
from mmdet.models.detectors import FasterRCNN
from mmrotate.registry import MODELS

from .two_stage_debias import TwoStageDebiasMixin


@MODELS.register_module()
class DebLoRAFasterRCNN(TwoStageDebiasMixin, FasterRCNN):
    """FasterRCNN with the de-biasing interface and the stage-2 feature loss."""
