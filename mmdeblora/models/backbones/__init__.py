from .lora_backbone import LoRABackbone, clora_adapter_name
from .sd_backbone import SDBackbone

__all__ = ['LoRABackbone', 'SDBackbone', 'clora_adapter_name']
