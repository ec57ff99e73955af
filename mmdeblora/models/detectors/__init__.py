from .deblora_cascade_rcnn import DebLoRACascadeRCNN
from .deblora_faster_rcnn import DebLoRAFasterRCNN
from .two_stage_debias import TwoStageDebiasMixin

__all__ = ['DebLoRACascadeRCNN', 'DebLoRAFasterRCNN', 'TwoStageDebiasMixin']
