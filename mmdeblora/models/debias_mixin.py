"""The de-biasing interface: what a model implements so that debLoRA can run on it.

The de-biasing step (``mmdeblora.engine.debias``) and ``DebLoRAHook`` talk to a model only
through ``DebiasModel``:

- ``debias_check(stage2)``: raise, naming the requirement, when the model cannot run the
  method (called by the hook before the first training iteration);
- ``instance_features(inputs, data_samples, adapters=None)``: one feature per instance
  (detector: per GT box; classifier: per image) and its label, on the explicit path that
  extraction and the stage-2 loss share;
- ``enter_debias_stage(state, stage2)``: add and freeze adapters, switch the feature loss
  on (idempotent, also used when a stage-2 checkpoint is resumed).

``DebiasMixin`` implements all three, plus the stage-2 ``loss`` and ``train`` behaviour,
for any model with ``backbone`` (a ``LoRABackbone``), optional ``neck`` and
``extract_feat``; a model family adds how a feature map becomes instance features
(``debias_features``). In stage 2 the model holds a typed, frozen ``Stage2Plan``
(``debias_plan``) and ``debias_loss_parts`` gives the stage-2 loss parts (the upstream task
loss, the feature loss, the gaps) to ``loss`` and to every tool. The task loss is the
upstream class's own ``loss``, called unchanged; the features it computes are captured by a
forward hook on the last module of the stage-1 path (the neck, else the backbone), as
distillation recorders do, so no upstream method body is copied here.

Stage 2 keeps the stage-1 path truly fixed: the backbone and the neck run in eval mode
(norm layers use the running statistics the clustered features were computed with and never
update them; the frozen adapter's dropout is off), only the new adapter's dropout follows
the train/eval mode, and both passes of a step run inside the backbone's
``deterministic_features()`` (for ``SDBackbone``: fixed diffusion noise). The target pass
(stage-1 adapters only, no gradient) therefore gives bit-identical features to the
extraction at the switch for the same input.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch
from torch import Tensor, nn

from mmdeblora.deblora import DebiasState, Stage2Settings
from mmdeblora.deblora.plan import Stage2Gaps, Stage2Plan


@runtime_checkable
class DebiasModel(Protocol):
    """What ``DebLoRAHook`` and ``debias_model`` need from a model."""

    def debias_check(self, stage2: Stage2Settings, pool: Optional[str] = None) -> None:
        ...

    def instance_features(self, inputs: Tensor, data_samples: Sequence,
                          adapters: Optional[Sequence[str]] = None
                          ) -> Tuple[Tensor, Tensor]:
        ...

    def enter_debias_stage(self, state: DebiasState, stage2: Stage2Settings) -> None:
        ...


@dataclass
class Stage2LossParts:
    """One stage-2 step's losses: the upstream task losses, the weighted feature loss
    (``loss_deblora_feat``; None without a new adapter), the weighted loss on calibrated
    copies (``loss_deblora_aug``; None without them) and the batch's gaps (logged as
    ``deblora_cal_gap`` / ``deblora_other_gap`` next to the feature loss)."""
    task: Dict[str, Tensor]
    feature: Optional[Tensor]
    augment: Optional[Tensor]
    gaps: Stage2Gaps

    def losses(self) -> Dict[str, Tensor]:
        out = dict(self.task)
        if self.feature is not None:
            out['loss_deblora_feat'] = self.feature
            # logged, not optimised (no 'loss' in the key): the batch's target reach
            if self.gaps.num_cal:
                out['deblora_cal_gap'] = self.feature.new_tensor(self.gaps.cal_gap)
            if self.gaps.num_other:
                out['deblora_other_gap'] = self.feature.new_tensor(self.gaps.other_gap)
        if self.augment is not None:
            out['loss_deblora_aug'] = self.augment
        return out


class DebiasMixin:
    """The de-biasing interface for a model with a ``LoRABackbone``; put it first in the
    bases (``class DebLoRAFasterRCNN(DebiasMixin, FasterRCNN)``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.debias_plan: Optional[Stage2Plan] = None

    # ------------------------------------------------------------------ family specific
    def debias_features(self, feats, data_samples: Sequence, pool: str = 'avg',
                        normalize: bool = True) -> Tuple[Tensor, Tensor]:
        """Instance features [N, D] and labels [N] from ``extract_feat``'s output."""
        raise NotImplementedError

    @property
    def debias_num_classes(self) -> int:
        raise NotImplementedError

    def _debias_family_check(self) -> None:
        """Family-specific requirements (heads, extractors); raise TypeError."""

    # ------------------------------------------------------------------ the interface
    def debias_check(self, stage2: Stage2Settings, pool: Optional[str] = None) -> None:
        """Raise, naming what is missing, if this model cannot run the de-biasing stage
        (``pool``: the instance features' pooling, when known)."""
        from mmdeblora.models.backbones.lora_backbone import LoRABackbone
        bb = getattr(self, 'backbone', None)
        if not isinstance(bb, LoRABackbone):
            raise TypeError(
                f'debLoRA needs model.backbone to be a LoRABackbone (the new adapter is '
                f'added to it), got {type(bb).__name__}: wrap it, e.g. '
                "backbone=dict(type='LoRABackbone', backbone=<your backbone>, rank=8)")
        missing = [a for a in stage2.stage1_adapters if a not in bb.adapter_names]
        if missing:
            raise ValueError(f'DebLoRAHook.stage1_adapters names {missing}, which the '
                             f'backbone does not have; its adapters: {bb.adapter_names}')
        if stage2.new_adapter and stage2.adapter_name not in bb.adapter_names:
            # (a stage-2 resume has it already)
            try:
                bb.check_adapter_cfg(**stage2.adapter_cfg)
            except (ValueError, TypeError) as e:
                raise ValueError(f'DebLoRAHook.adapter_cfg {stage2.adapter_cfg} cannot '
                                 f'build the new adapter: {e}') from e
        self._debias_family_check()
        if stage2.augments:
            self._debias_augment_check(stage2, pool)

    def _debias_augment_check(self, stage2: Stage2Settings, pool: Optional[str]) -> None:
        """Raise if the calibrated copies cannot be fed to this model's classifier."""
        raise TypeError(f'{type(self).__name__} does not support DebLoRAHook.mode='
                        f'{stage2.mode!r}')

    def debias_augment_loss(self, feats, data_samples: Sequence) -> Tensor:
        """The classifier's loss on calibrated copies of the batch's calibrated instances
        (``extract_feat``'s output ``feats``; copies detached: the classifier trains)."""
        raise NotImplementedError

    @property
    def debias_enabled(self) -> bool:
        return self.debias_plan is not None

    def instance_features(self, inputs: Tensor, data_samples: Sequence,
                          adapters: Optional[Sequence[str]] = None,
                          pool: Optional[str] = None,
                          normalize: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
        """One feature per instance, with only ``adapters`` active when given.

        Runs in the model's current train/eval mode; the caller decides on gradients.
        ``pool`` / ``normalize`` default to the stage-2 settings (or avg, True).
        """
        plan = self.debias_plan
        pool = (plan.pool if plan else 'avg') if pool is None else pool
        normalize = (plan.normalize if plan else True) if normalize is None else normalize
        if adapters is not None:
            with self.backbone.adapters_only(list(adapters)):
                return self.instance_features(inputs, data_samples, None, pool, normalize)
        with self.backbone.deterministic_features():
            feats = self.extract_feat(inputs)
        return self.debias_features(feats, data_samples, pool, normalize)

    def enter_debias_stage(self, state: DebiasState, stage2: Stage2Settings) -> None:
        """Freeze the stage-1 path, add the new adapter (not in ``augment`` mode), switch
        the feature loss and / or the calibrated copies on."""
        self.debias_check(stage2)
        if state.class_centers.shape[0] != self.debias_num_classes:
            raise ValueError(f'{state.class_centers.shape[0]} class centers for a model '
                             f'with {self.debias_num_classes} classes')
        bb = self.backbone
        name, stage1 = stage2.adapter_name, list(stage2.stage1_adapters)
        new = [name] if stage2.new_adapter else []
        if new and name not in bb.adapter_names:
            bb.add_adapter(name, **stage2.adapter_cfg)
        for a in stage1:
            bb.freeze_adapter(a)
        for a in new:
            bb.unfreeze_adapter(a)
        if stage2.freeze_backbone_extra or not new:
            bb.set_trainable_extra([])
        bb.set_active_adapters(stage1 + new)
        neck = getattr(self, 'neck', None)
        if (stage2.freeze_neck or not new) and isinstance(neck, nn.Module):
            neck.requires_grad_(False)
        self.debias_plan = Stage2Plan.build(state, stage2)
        self.train(self.training)

    # ------------------------------------------------------------------ stage 2
    def _stage1_path(self) -> List[nn.Module]:
        neck = getattr(self, 'neck', None)
        return [self.backbone] + ([neck] if isinstance(neck, nn.Module) else [])

    def train(self, mode: bool = True):
        super().train(mode)
        if self.debias_plan is not None and mode:
            for module in self._stage1_path():
                module.eval()
            if self.debias_plan.adapter is not None:
                self.backbone.train_adapter_dropout([self.debias_plan.adapter], True)
        return self

    @torch.no_grad()
    def debias_targets(self, inputs: Tensor, data_samples: Sequence) -> Tuple[Tensor, Tensor]:
        """Stage-1 features z_1 [N, D] of the same input and their calibrated targets z_hat
        (moved toward the class's de-biased center; alpha 0: z_1 unchanged)."""
        plan = self.debias_plan
        z1, labels = self.instance_features(inputs, data_samples, plan.stage1_adapters)
        return z1, plan.targets(z1, labels)

    @contextmanager
    def _captured_features(self) -> Iterator[list]:
        """Record the output of the stage-1 path's last module (= ``extract_feat``'s output)
        while the upstream ``loss`` runs."""
        seen: list = []
        handle = self._stage1_path()[-1].register_forward_hook(
            lambda module, args, out: seen.append(out))
        try:
            yield seen
        finally:
            handle.remove()

    def debias_loss_parts(self, inputs: Tensor, data_samples: Sequence) -> Stage2LossParts:
        """The stage-2 loss parts of a batch (the model must be in stage 2)."""
        plan = self.debias_plan
        if plan is None:
            raise RuntimeError(f'{type(self).__name__} is not in the de-biasing stage: '
                               'call enter_debias_stage first')
        n = self._replay_split(data_samples)
        inputs, replay_inputs = inputs[:n], inputs[n:]
        data_samples, replay_samples = list(data_samples[:n]), list(data_samples[n:])
        if plan.adapter is not None:  # augment alone: z_1 = z, no second pass
            _, targets = self.debias_targets(inputs, data_samples)
        with self._captured_features() as seen, self.backbone.deterministic_features():
            task = super().loss(inputs, data_samples)
        if len(seen) != 1:
            raise RuntimeError(f'{type(self).__name__}.loss ran the stage-1 path '
                               f'{len(seen)} times; the de-biasing stage needs exactly one '
                               'extract_feat per step')
        z, labels = self.debias_features(seen[0], data_samples, plan.pool, plan.normalize)
        feature = augment = None
        if plan.adapter is None:  # no new adapter: nothing to pull, z is z_1
            targets = plan.targets(z.detach(), labels)
        elif replay_samples and plan.feature_weight > 0:
            zr, tr, lr = self._replay_features(replay_inputs, replay_samples)
            feature = plan.feature_loss(torch.cat([z, zr]), torch.cat([targets, tr]),
                                        torch.cat([labels, lr]))
        else:
            feature = plan.feature_loss(z, targets, labels)
        if plan.augment_weight > 0:
            augment = plan.augment_weight * self.debias_augment_loss(seen[0], data_samples)
        return Stage2LossParts(task=task, feature=feature, augment=augment,
                               gaps=plan.gaps(z, targets, labels))

    @staticmethod
    def _replay_split(data_samples: Sequence) -> int:
        """How many leading samples are the batch's own; the rest are tail-replay images
        (``mmdeblora.engine.replay``), which must come last."""
        from mmdeblora.engine.replay import is_replay
        marks = [is_replay(s) for s in data_samples]
        n = marks.index(True) if any(marks) else len(marks)
        if not all(marks[n:]):
            raise ValueError('tail-replay samples must follow the batch\'s own samples')
        return n

    def _replay_features(self, inputs: Tensor, data_samples: Sequence
                         ) -> Tuple[Tensor, Tensor, Tensor]:
        """The calibrated instances of tail-replay images: features (with gradient),
        targets, labels; for the feature loss's calibrated mean only."""
        plan = self.debias_plan
        _, targets = self.debias_targets(inputs, data_samples)
        z, labels = self.instance_features(inputs, data_samples)
        keep = plan.instance_calibrated(labels)
        return z[keep], targets[keep], labels[keep]

    def loss(self, inputs: Tensor, data_samples: Sequence) -> Dict[str, Tensor]:
        if self.debias_plan is None:
            return super().loss(inputs, data_samples)
        return self.debias_loss_parts(inputs, data_samples).losses()
