from .deblora_faster_rcnn import DebLoRAFasterRCNN

__all__ = ['DebLoRAFasterRCNN']
