"""Gather a tensor of every rank (sizes may differ) through mmengine.dist."""
import torch
from mmengine import dist
from torch import Tensor


def gather_cat(x: Tensor) -> Tensor:
    """Concatenation of ``x`` of all ranks in rank order (``x`` itself when not distributed).

    Sizes along dim 0 may differ between ranks (each rank extracts its own shard), so the
    object gather is used; the result lands on ``x``'s device on every rank.
    """
    if dist.get_world_size() == 1:
        return x
    parts = dist.all_gather_object(x.detach().cpu())
    return torch.cat(parts).to(x.device)
