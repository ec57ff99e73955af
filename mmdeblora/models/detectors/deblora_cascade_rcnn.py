"""RoI Transformer (mmdet ``CascadeRCNN`` as mmrotate configures it) with debLoRA.

The instance features come from the last stage's RoI extractor (the rotated one, which
pools the RoIs the final box head classifies).
"""
from mmdet.models.detectors import CascadeRCNN
from mmrotate.registry import MODELS

from .two_stage_debias import TwoStageDebiasMixin


@MODELS.register_module()
class DebLoRACascadeRCNN(TwoStageDebiasMixin, CascadeRCNN):
    """CascadeRCNN (RoI Transformer) with the de-biasing interface and feature loss."""
