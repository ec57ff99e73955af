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
