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
(``debias_features``) and how its task loss is computed from given features
(``debias_task_loss``).

Stage 2 keeps the stage-1 path truly fixed: the backbone and the neck run in eval mode
(norm layers use the running statistics the clustered features were computed with and never
update them; the frozen adapter's dropout is off), only the new adapter's dropout follows
the train/eval mode, and both passes of a step run inside the backbone's
``deterministic_features()`` (for ``SDBackbone``: fixed diffusion noise). The target pass
(stage-1 adapters only, no gradient) therefore gives bit-identical features to the
extraction at the switch for the same input.
"""
from typing import Dict, List, Optional, Protocol, Sequence, Tuple, runtime_checkable

import torch
from torch import Tensor, nn

from mmdeblora.deblora import DebiasState, Stage2Settings, calibrate, feature_loss


@runtime_checkable
class DebiasModel(Protocol):
    """What ``DebLoRAHook`` and ``debias_model`` need from a model."""

    def debias_check(self, stage2: Stage2Settings) -> None:
        ...

    def instance_features(self, inputs: Tensor, data_samples: Sequence,
                          adapters: Optional[Sequence[str]] = None
                          ) -> Tuple[Tensor, Tensor]:
        ...

    def enter_debias_stage(self, state: DebiasState, stage2: Stage2Settings) -> None:
        ...


class DebiasMixin:
    """The de-biasing interface for a model with a ``LoRABackbone``; put it first in the
    bases (``class DebLoRAFasterRCNN(DebiasMixin, FasterRCNN)``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._debias: Optional[dict] = None

    # ------------------------------------------------------------------ family specific
    def debias_features(self, feats, data_samples: Sequence, pool: str = 'avg',
                        normalize: bool = True) -> Tuple[Tensor, Tensor]:
        """Instance features [N, D] and labels [N] from ``extract_feat``'s output."""
        raise NotImplementedError

    def debias_task_loss(self, feats, data_samples: Sequence) -> Dict[str, Tensor]:
        """The model's own losses computed from the given ``extract_feat`` output."""
        raise NotImplementedError

    @property
    def debias_num_classes(self) -> int:
        raise NotImplementedError

    def _debias_family_check(self) -> None:
        """Family-specific requirements (heads, extractors); raise TypeError."""

    # ------------------------------------------------------------------ the interface
    def debias_check(self, stage2: Stage2Settings) -> None:
        """Raise, naming what is missing, if this model cannot run the de-biasing stage."""
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
        if stage2.adapter_name not in bb.adapter_names:  # a stage-2 resume has it already
            try:
                bb.check_adapter_cfg(**stage2.adapter_cfg)
            except (ValueError, TypeError) as e:
                raise ValueError(f'DebLoRAHook.adapter_cfg {stage2.adapter_cfg} cannot '
                                 f'build the new adapter: {e}') from e
        self._debias_family_check()

    @property
    def debias_enabled(self) -> bool:
        return self._debias is not None

    def instance_features(self, inputs: Tensor, data_samples: Sequence,
                          adapters: Optional[Sequence[str]] = None,
                          pool: Optional[str] = None,
                          normalize: Optional[bool] = None) -> Tuple[Tensor, Tensor]:
        """One feature per instance, with only ``adapters`` active when given.

        Runs in the model's current train/eval mode; the caller decides on gradients.
        ``pool`` / ``normalize`` default to the stage-2 settings (or avg, True).
        """
        d = self._debias or {}
        pool = d.get('pool', 'avg') if pool is None else pool
        normalize = d.get('normalize', True) if normalize is None else normalize
        if adapters is not None:
            with self.backbone.adapters_only(list(adapters)):
                return self.instance_features(inputs, data_samples, None, pool, normalize)
        with self.backbone.deterministic_features():
            feats = self.extract_feat(inputs)
        return self.debias_features(feats, data_samples, pool, normalize)

    def enter_debias_stage(self, state: DebiasState, stage2: Stage2Settings) -> None:
        """Add the new adapter, freeze the stage-1 path, switch the feature loss on."""
        self.debias_check(stage2)
        if state.class_centers.shape[0] != self.debias_num_classes:
            raise ValueError(f'{state.class_centers.shape[0]} class centers for a model '
                             f'with {self.debias_num_classes} classes')
        bb = self.backbone
        name, stage1 = stage2.adapter_name, list(stage2.stage1_adapters)
        if name not in bb.adapter_names:
            bb.add_adapter(name, **stage2.adapter_cfg)
        for a in stage1:
            bb.freeze_adapter(a)
        bb.unfreeze_adapter(name)
        if stage2.freeze_backbone_extra:
            bb.set_trainable_extra([])
        bb.set_active_adapters(stage1 + [name])
        neck = getattr(self, 'neck', None)
        if stage2.freeze_neck and isinstance(neck, nn.Module):
            neck.requires_grad_(False)
        self._debias = dict(
            class_centers=state.class_centers.detach().float(),
            alphas=state.alphas.detach().float(), pool=state.pool,
            calibrated=state.calibrated.detach().bool(),
            normalize=state.normalize, renormalize=state.renormalize,
            loss_weight=float(stage2.loss_weight), stage1_adapters=stage1, adapter=name,
            loss_scale=float(state.loss_scale) if stage2.loss_normalize else 1.0)
        self.train(self.training)

    # ------------------------------------------------------------------ stage 2
    def _stage1_path(self) -> List[nn.Module]:
        neck = getattr(self, 'neck', None)
        return [self.backbone] + ([neck] if isinstance(neck, nn.Module) else [])

    def train(self, mode: bool = True):
        super().train(mode)
        if self._debias is not None and mode:
            for module in self._stage1_path():
                module.eval()
            self.backbone.train_adapter_dropout([self._debias['adapter']], True)
        return self

    @torch.no_grad()
    def debias_targets(self, inputs: Tensor, data_samples: Sequence) -> Tensor:
        """Calibrated targets z_hat [N, D]: the stage-1 feature of the same input, moved
        toward its class's de-biased center (alpha 0: unchanged)."""
        d = self._debias
        z1, labels = self.instance_features(inputs, data_samples, d['stage1_adapters'])
        return calibrate(z1, labels, d['class_centers'].to(z1.device),
                         d['alphas'].to(z1.device), d['renormalize'])

    def loss(self, inputs: Tensor, data_samples: Sequence) -> Dict[str, Tensor]:
        if self._debias is None:
            return super().loss(inputs, data_samples)
        d = self._debias
        targets = self.debias_targets(inputs, data_samples)
        with self.backbone.deterministic_features():
            feats = self.extract_feat(inputs)
        losses = self.debias_task_loss(feats, data_samples)
        z, labels = self.debias_features(feats, data_samples, d['pool'], d['normalize'])
        calibrated = d['calibrated'].to(labels.device)[labels.long()]
        gap = feature_loss(z, targets, calibrated)
        losses['loss_deblora_feat'] = d['loss_weight'] / d['loss_scale'] * gap
        return losses
