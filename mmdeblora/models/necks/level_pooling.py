"""Global average pooling of chosen levels of a multi-level backbone, concatenated.

A classifier reads one vector per image, while ``SDBackbone`` gives five decoder levels
(strides 4 / 8 / 16 / 32 / 64, the stride-4 one an upsampled copy of stride 8). mmpretrain's
``GlobalAveragePooling`` pools every level and its heads read the last one only; this neck
says which levels make the image's feature, so the choice is a config key.
"""
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS
from torch import Tensor


@MODELS.register_module()
class LevelPooling(BaseModule):
    """Average-pool each of ``levels`` (indices into the backbone's outputs) and
    concatenate them: one [N, sum of their channels] tensor, returned as a 1-tuple."""

    def __init__(self, levels: Sequence[int] = (1, 2, 3, 4), init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        levels = list(levels)
        if not levels or not all(isinstance(i, int) for i in levels):
            raise ValueError(f'neck.levels must be a non-empty list of ints, got {levels!r}')
        self.levels = levels

    def forward(self, inputs) -> Tuple[Tensor]:
        if isinstance(inputs, Tensor):
            inputs = (inputs, )
        n = len(inputs)
        bad = [i for i in self.levels if not -n <= i < n]
        if bad:
            raise IndexError(f'neck.levels {bad} out of range: the backbone gives {n} levels')
        pooled = []
        for i in self.levels:
            x = inputs[i]
            pooled.append(F.adaptive_avg_pool2d(x, 1).flatten(1) if x.dim() == 4
                          else x.flatten(1))
        return (torch.cat(pooled, dim=1), )
