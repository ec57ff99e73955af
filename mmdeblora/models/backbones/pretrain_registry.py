"""Our backbones in mmpretrain's registry too, for the classification configs.

``LoRABackbone`` and ``SDBackbone`` are registered in mmrotate's ``MODELS`` (the detection
side); classification configs run with ``default_scope='mmpretrain'``, whose registry is a
sibling of mmrotate's and would not find them. The same classes are added here under the
same names, so nothing changes for detection. ``LoRABackbone`` builds its inner backbone
through the registry of the runner's scope, so ``type='ResNet'`` inside a classification
config is mmpretrain's ResNet.
"""
from mmpretrain.registry import MODELS as PRETRAIN_MODELS

from .lora_backbone import LoRABackbone
from .sd_backbone import SDBackbone

for _cls in (LoRABackbone, SDBackbone):
    PRETRAIN_MODELS.register_module(module=_cls)
