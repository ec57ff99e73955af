"""Mean and spread of per-seed results, shared by the analysis tools."""
import math
from typing import Sequence, Tuple


def mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (NaN for a single value) of ``values``."""
    values = [float(v) for v in values]
    n = len(values)
    if not n:
        raise ValueError('mean_sd of no values')
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float('nan')
    return mean, sd


def fmt_mean_sd(values: Sequence[float], fmt: str = '{:.3f} +- {:.3f}') -> str:
    """``mean_sd`` formatted."""
    return fmt.format(*mean_sd(values))


def state_dict_fingerprint(state_dict) -> str:
    """sha256 (16 hex digits) of a state dict's keys, dtypes, shapes and values, in key
    order: which weights a table was made from (a foundation, a pretrained file)."""
    import hashlib

    import torch
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        value = state_dict[key]
        if not torch.is_tensor(value):
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f'{key}|{t.dtype}|{tuple(t.shape)}'.encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return digest.hexdigest()[:16]
