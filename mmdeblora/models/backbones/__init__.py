from . import pretrain_registry  # noqa: F401  (registers them in mmpretrain too)
from .clora_backbone import CLoRABackbone, clora_adapter_name
from .lora_backbone import LoRABackbone
from .sd_backbone import SDBackbone

__all__ = ['CLoRABackbone', 'LoRABackbone', 'SDBackbone', 'clora_adapter_name']
