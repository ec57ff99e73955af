"""The stage-2 plan: what a model holds while it trains the de-biasing stage.

``Stage2Plan`` is built once, at ``enter_debias_stage``, from the checked stage-2 settings
(``Stage2Settings``) and the de-biasing state (``DebiasState``). It is frozen and typed:
the model's ``loss``, the target-reach measurement and every tool read the same fields, and
a change (a tool trying another lambda) is a new plan (``plan.replace(loss_weight=...)``),
never an edit of a shared dict.

``Stage2Gaps`` are the feature-loss parts of a set of instances, in units of the loss scale
s (the mean gap of a calibrated training instance at the switch): ``cal_gap`` is the mean
squared distance of the calibrated instances to their targets (about 1 at the switch),
``other_gap`` the drift of the other instances from their stage-1 features (0 at the
switch).
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

from .calibration import calibrate, feature_loss
from .settings import Stage2Settings
from .state import DebiasState


@dataclass(frozen=True)
class Stage2Gaps:
    """Feature-loss parts of a set of instances (each divided by the loss scale)."""
    cal_gap: float     # mean ||z - z_hat||^2 / s over the calibrated instances (nan: none)
    other_gap: float   # mean ||z - z_1||^2 / s over the others (nan: none)
    num_cal: int
    num_other: int

    @classmethod
    def of(cls, gap: Tensor, calibrated: Tensor, scale: float) -> 'Stage2Gaps':
        """From per-instance squared gaps ``gap`` [N] and the calibrated mask [N]."""
        gap = gap.detach().double()

        def mean(part: Tensor) -> float:
            return float(gap[part].mean()) / scale if bool(part.any()) else math.nan

        return cls(mean(calibrated), mean(~calibrated), int(calibrated.sum()),
                   int((~calibrated).sum()))


@dataclass(frozen=True)
class Stage2Plan:
    """Everything the model's stage 2 needs; see the module docstring.

    ``loss_scale`` is 1 when the settings switch normalisation off; ``feature_weight`` is
    the factor of the feature loss (lambda / s).
    """
    class_centers: Tensor    # h_c [C, D]
    alphas: Tensor           # alpha_c [C]
    calibrated: Tensor       # [C] bool
    pool: str
    normalize: bool
    renormalize: bool
    loss_weight: float
    loss_scale: float
    adapter: Optional[str]   # the new adapter; None in ``augment`` mode
    stage1_adapters: Tuple[str, ...]
    augment_weight: float = 0.0  # 0: no calibrated copies (``feature_loss`` mode)
    augment_reduction: str = 'sample'  # see Stage2Settings
    hold_weight: float = 1.0  # the held (uncalibrated) instances' mean; see Stage2Settings

    @classmethod
    def build(cls, state: DebiasState, stage2: Stage2Settings) -> 'Stage2Plan':
        return cls(class_centers=state.class_centers.detach().float().cpu(),
                   alphas=state.alphas.detach().float().cpu(),
                   calibrated=state.calibrated.detach().bool().cpu(),
                   pool=state.pool, normalize=bool(state.normalize),
                   renormalize=bool(state.renormalize),
                   loss_weight=float(stage2.loss_weight),
                   loss_scale=float(state.loss_scale) if stage2.loss_normalize else 1.0,
                   adapter=stage2.adapter_name if stage2.new_adapter else None,
                   stage1_adapters=tuple(stage2.stage1_adapters),
                   augment_weight=float(stage2.augment_weight) if stage2.augments else 0.0,
                   augment_reduction=stage2.augment_reduction,
                   hold_weight=float(stage2.hold_weight))

    def augment_scale(self, copies: int, batch: int) -> float:
        """What the copies' mean loss is multiplied by: ``copies / batch`` when each copy
        weighs as one sample of a batch of ``batch`` (``augment_reduction='sample'``)."""
        if self.augment_reduction == 'mean':
            return 1.0
        return copies / max(batch, 1)

    def replace(self, **changes) -> 'Stage2Plan':
        return dataclasses.replace(self, **changes)

    @property
    def feature_weight(self) -> float:
        return self.loss_weight / self.loss_scale

    def targets(self, z1: Tensor, labels: Tensor) -> Tensor:
        """Calibrated targets z_hat of stage-1 features ``z1`` (alpha 0: ``z1`` itself)."""
        return calibrate(z1, labels, self.class_centers.to(z1.device),
                         self.alphas.to(z1.device), self.renormalize)

    def instance_calibrated(self, labels: Tensor) -> Tensor:
        """[N] bool: which instances are pulled toward a de-biased center."""
        return self.calibrated.to(labels.device)[labels.long()]

    def feature_loss(self, z: Tensor, targets: Tensor, labels: Tensor) -> Tensor:
        """lambda / s times the two-mean feature loss (``calibration.feature_loss``)."""
        return self.feature_weight * feature_loss(
            z, targets, self.instance_calibrated(labels), self.hold_weight)

    def calibrated_copies(self, x: Tensor, labels: Tensor) -> Tensor:
        """Calibrated copies of un-normalised features ``x`` [N, D] (the classifier's input,
        pooled as the instance features are): the target direction of each, at its own norm
        when the features are L2-normalised for the method. Alpha 0: ``x`` itself."""
        if not self.normalize:
            return self.targets(x, labels)
        z = torch.nn.functional.normalize(x, dim=1)
        return self.targets(z, labels) * x.norm(dim=1, keepdim=True)

    def gaps(self, z: Tensor, targets: Tensor, labels: Tensor) -> Stage2Gaps:
        """The calibrated gap and the others' drift of ``z`` (see ``Stage2Gaps``)."""
        with torch.no_grad():
            gap = ((z.detach() - targets) ** 2).sum(1)
        return Stage2Gaps.of(gap, self.instance_calibrated(labels), self.loss_scale)
