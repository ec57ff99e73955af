"""Settings of the model's stage 2 (what ``enter_debias_stage`` needs), checked on creation.

Plain python: the hook builds them from its config options when it is built, so a typo or
an out-of-range value fails before stage 1 trains, with the option named.
"""
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Dict, Sequence, Tuple

ADAPTER_KEYS = ('rank', 'alpha', 'dropout', 'target_modules')
MODES = ('feature_loss', 'augment', 'both')
AUGMENT_REDUCTIONS = ('sample', 'mean')


def check_keys(options: Dict[str, Any], allowed: Sequence[str], where: str) -> None:
    """Raise on an unknown option, naming it and listing the allowed ones."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f'{where}: unknown option(s) {unknown}; allowed: {sorted(allowed)}')


def check_number(value: Any, key: str, low: float = -math.inf, high: float = math.inf,
                 integer: bool = False, low_open: bool = False) -> None:
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        kind = 'an integer' if integer else 'a number'
        raise TypeError(f'{key} must be {kind}, got {value!r}')
    if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
        lo = '(' if low_open else '['
        raise ValueError(f'{key} must lie in {lo}{low}, {high}], got {value!r}')


def check_bool(value: Any, key: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f'{key} must be True or False, got {value!r}')


@dataclass
class Stage2Settings:
    """How a model enters the de-biasing stage.

    Args:
        mode: what stage 2 trains. ``feature_loss`` (the paper's text): a new adapter
            pulled toward the calibrated targets by the feature loss. ``augment`` (the
            official scripts): no new adapter, the backbone and neck frozen; the classifier
            (the linear head; a detector's box head) trains on the batch plus calibrated
            copies of its calibrated instances' features. ``both``: the two together (the
            copies are detached, so they train the classifier only).
        augment_weight: the weight of the loss on the calibrated copies
            (``loss_deblora_aug``).
        augment_reduction: how the copies' loss is averaged. ``'sample'`` (default): each
            copy weighs as one more sample of the classifier's batch (its loss summed over
            the copies and divided by the batch's sample count: images for a classifier,
            sampled RoIs for a detector), i.e. the classifier trains on the original plus
            the calibrated features, as the official scripts' probe does. ``'mean'``: the
            copies' own mean, so the few copies of a batch weigh as much as the whole
            batch (on a detector, each tail copy ~1000 RoIs: it wrecks the box head,
            docs/deblora.md).
        adapter_name: the new adapter trained in stage 2.
        adapter_cfg: its ``rank``, ``alpha``, ``dropout``, ``target_modules`` (default:
            the backbone's).
        stage1_adapters: the adapters that make the stage-1 model (frozen in stage 2).
        loss_weight: lambda of the feature loss.
        hold_weight: the weight of the feature loss's second mean, the uncalibrated
            instances held at their stage-1 features (1: the two means weigh alike). 0
            drops the hold: an ablation that measures what holding the others costs the
            calibrated instances' reach (docs/deblora.md), not a de-biasing setting.
        loss_normalize: divide the feature loss by the mean gap of a calibrated instance
            at the switch (``DebiasState.loss_scale``), so lambda means the same on any
            backbone and extraction cap.
        freeze_neck, freeze_backbone_extra: freeze the neck and the backbone's
            ``trainable_extra`` parameters (norms) in stage 2: they are shared by the
            student and the stage-1 target path, so while they train the targets move.
    """
    mode: str = 'feature_loss'
    augment_weight: float = 1.0
    augment_reduction: str = 'sample'
    adapter_name: str = 'deblora'
    adapter_cfg: Dict[str, Any] = field(default_factory=dict)
    stage1_adapters: Tuple[str, ...] = ('default', )
    loss_weight: float = 0.05
    hold_weight: float = 1.0
    loss_normalize: bool = True
    freeze_neck: bool = True
    freeze_backbone_extra: bool = True
    where: str = 'DebLoRAHook'

    def __post_init__(self) -> None:
        w = self.where
        if self.mode not in MODES:
            raise ValueError(f'{w}.mode must be one of {list(MODES)}, got {self.mode!r}')
        check_number(self.augment_weight, f'{w}.augment_weight', 0)
        if self.augment_reduction not in AUGMENT_REDUCTIONS:
            raise ValueError(f'{w}.augment_reduction must be one of '
                             f'{list(AUGMENT_REDUCTIONS)}, got {self.augment_reduction!r}')
        if not isinstance(self.adapter_name, str) or \
                not re.fullmatch(r'[A-Za-z_]\w*', self.adapter_name):
            raise ValueError(f'{w}.adapter_name must be an identifier, got '
                             f'{self.adapter_name!r}')
        if isinstance(self.stage1_adapters, str):
            self.stage1_adapters = (self.stage1_adapters, )
        self.stage1_adapters = tuple(self.stage1_adapters)
        if not self.stage1_adapters or not all(isinstance(a, str)
                                               for a in self.stage1_adapters):
            raise ValueError(f'{w}.stage1_adapters must be a non-empty list of adapter '
                             f'names, got {self.stage1_adapters!r}')
        if self.adapter_name in self.stage1_adapters:
            raise ValueError(f'{w}.adapter_name {self.adapter_name!r} is also a stage-1 '
                             'adapter; the de-biasing stage needs a new one')
        cfg = dict(self.adapter_cfg or {})
        check_keys(cfg, ADAPTER_KEYS, f'{w}.adapter_cfg')
        if 'rank' in cfg:
            check_number(cfg['rank'], f'{w}.adapter_cfg.rank', 1, integer=True)
        if 'alpha' in cfg:
            check_number(cfg['alpha'], f'{w}.adapter_cfg.alpha', 0, low_open=True)
        if 'dropout' in cfg:
            check_number(cfg['dropout'], f'{w}.adapter_cfg.dropout', 0, 0.999)
        self.adapter_cfg = cfg
        check_number(self.loss_weight, f'{w}.loss_weight', 0)
        check_number(self.hold_weight, f'{w}.hold_weight', 0)
        for key in ('loss_normalize', 'freeze_neck', 'freeze_backbone_extra'):
            check_bool(getattr(self, key), f'{w}.{key}')

    @property
    def new_adapter(self) -> bool:
        """Whether stage 2 adds and trains a new adapter (not in ``augment`` mode)."""
        return self.mode != 'augment'

    @property
    def augments(self) -> bool:
        return self.mode != 'feature_loss'

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name != 'where')
