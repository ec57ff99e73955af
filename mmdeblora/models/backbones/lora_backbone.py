"""LoRA around any registered backbone: a thin layer over peft's ``LoraModel``.

Why a wrapper and not ``init_cfg``: peft renames every wrapped layer's weights to
``...base_layer.weight``, so a checkpoint loaded after injection would silently miss them.
The wrapper therefore builds the backbone, runs its own ``init_weights``, loads ``pretrained``
into the *plain* backbone, and only then injects the adapters; its own ``init_weights`` is a
no-op so the runner cannot re-initialise the base or the (zero-initialised) LoRA ``B``.

The adapters' state is peft's (``peft_config``: one ``LoraConfig`` per adapter; the tuner's
active set). Several named adapters can live on one backbone (debLoRA adds a second one,
cLoRA one per route). Which adapters run in ``forward`` (active) and which get gradients
(trainable) are kept apart: an adapter is frozen when its config says ``inference_mode`` (as
peft marks one loaded with ``is_trainable=False``), and since peft's ``set_adapter`` turns
``requires_grad`` on for every active adapter, each switch puts that back. Elsewhere:
``adapter_io`` (adapter configs; ``AdapterIOMixin``: tensors, folders, checkpoint record),
``trainable_extra``, ``slim`` (slim checkpoints), ``mmdeblora.utils`` (weight files).
"""
import copy
import re
from contextlib import contextmanager, nullcontext
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmrotate.registry import MODELS
from peft import LoraConfig
from peft.tuners.lora import LoraModel
from peft.tuners.tuners_utils import BaseTunerLayer

from mmdeblora.utils.checkpoint_fit import load_pretrained
from . import adapter_io, slim
from .trainable_extra import check_extra, count_trainable, mark_extra

Targets = Union[str, Sequence[str]]


@MODELS.register_module()
class LoRABackbone(adapter_io.AdapterIOMixin, BaseModule):
    """Freeze a backbone and train peft LoRA adapters (plus named extras) on it.

    Args:
        backbone: config of any registered backbone (``mmdet.ResNet``, ``SDBackbone``, ...).
        pretrained: local checkpoint loaded into the plain backbone before injection
            (mmengine checkpoint, raw state dict or ``.safetensors``).
        pretrained_prefix: keys under this prefix are taken (prefix stripped) when the
            checkpoint has any; the default reads a whole detector's checkpoint.
        pretrained_strict: a ``pretrained`` that does not fit the backbone (a tensor of
            another shape, or backbone tensors it does not hold) is an error; ``False``
            loads what fits and warns with the counts (``mmdeblora.utils.load_pretrained``).
        rank, alpha, dropout: LoRA ``r``, ``lora_alpha``, ``lora_dropout`` (scaling alpha/r).
        target_modules: peft semantics: a list of module-name suffixes, or one regex string
            matched against full module names. Linear and Conv2d layers. ``None`` takes the
            backbone's ``default_lora_target_modules`` (SDBackbone: attention projections).
        adapter_name: name of the first adapter.
        trainable_extra: regexes (``re.fullmatch``) of base parameter names kept trainable,
            e.g. ``r'.*bn\\d*\\..*'`` for norms.
    """

    def __init__(self,
                 backbone: dict,
                 pretrained: Optional[str] = None,
                 pretrained_prefix: Optional[str] = 'backbone.',
                 pretrained_strict: bool = True,
                 rank: int = 8,
                 alpha: float = 16,
                 dropout: float = 0.0,
                 target_modules: Optional[Targets] = None,
                 adapter_name: str = 'default',
                 trainable_extra: Sequence[str] = (),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.base = MODELS.build(backbone)
        if hasattr(self.base, 'init_weights'):
            self.base.init_weights()
        # the frozen base's weight files, for slim checkpoints: (source, keys it gives | None)
        self.weight_sources: List[tuple] = slim.weight_sources(backbone)
        if pretrained:
            loaded = load_pretrained(self.base, pretrained, pretrained_prefix, pretrained_strict)
            self.weight_sources.append((f'pretrained={pretrained}', loaded))
        if target_modules is None:
            target_modules = getattr(self.base, 'default_lora_target_modules', None)
            if target_modules is None:
                raise ValueError(f'{type(self.base).__name__} names no default LoRA targets; '
                                 'set target_modules')
        self._defaults = dict(rank=rank, alpha=alpha, dropout=dropout,
                              target_modules=target_modules)
        self._extra = [re.compile(p) for p in trainable_extra]
        self._layers: List[BaseTunerLayer] = []  # peft's LoRA layers, listed by _sync
        self.add_adapter(adapter_name)
        check_extra(self._extra, self.base)
        self._is_init = True  # the base was initialised above; LoRA B must stay zero

    def check_adapter_cfg(self, rank: Optional[int] = None, alpha: Optional[float] = None,
                          dropout: Optional[float] = None,
                          target_modules: Optional[Targets] = None) -> LoraConfig:
        """The ``LoraConfig`` ``add_adapter`` would build (the constructor's settings with
        these overrides), or its error when it matches no Linear or Conv2d layer; changes
        nothing (the debLoRA hook rejects a bad ``adapter_cfg`` before stage 1 trains)."""
        given = dict(rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
        cfg = dict(self._defaults, **{k: v for k, v in given.items() if v is not None})
        return adapter_io.check_targets(adapter_io.build_lora_config(cfg), self.base)

    # ------------------------------------------------------------------ adapters
    @property
    def peft_config(self) -> Dict[str, LoraConfig]:
        """peft's record of the adapters: name -> ``LoraConfig`` (in the order added)."""
        tuner = self.__dict__.get('_tuner')
        return tuner.peft_config if tuner is not None else {}

    @property
    def adapter_names(self) -> List[str]:
        return list(self.peft_config)

    @property
    def active_adapters(self) -> List[str]:
        return list(self._tuner.active_adapters) if self.peft_config else []

    def _check_names(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self.peft_config]
        if unknown:
            raise KeyError(f'unknown adapter(s) {unknown}; adapters: {self.adapter_names}')

    def add_adapter(self, name: str, rank: Optional[int] = None, alpha: Optional[float] = None,
                    dropout: Optional[float] = None, target_modules: Optional[Targets] = None,
                    activate: bool = True) -> None:
        """Inject a new adapter (LoRA B = 0, so outputs are unchanged), trainable; ``activate``
        adds it to the active set, so it gets gradients at once."""
        if name in self.peft_config:
            raise ValueError(f'adapter {name!r} already exists')
        if not re.fullmatch(r'[A-Za-z_]\w*', name):
            raise ValueError(f'adapter name {name!r} must be an identifier (no dots)')
        config = self.check_adapter_cfg(rank, alpha, dropout, target_modules)
        active = self.active_adapters
        if '_tuner' not in self.__dict__:
            # not a submodule (its `model` is `base`): the base's tensors keep their `base.` keys
            self.__dict__['_tuner'] = LoraModel(self.base, config, name)
        else:  # what PeftModel.add_adapter does
            self._tuner.peft_config[name] = config
            self._tuner.inject_adapter(self.base, name)
        self._sync(active + [name] if activate else active)

    def delete_adapter(self, name: str) -> None:
        """Remove an adapter (peft's ``delete_adapter``); the others stay as they are."""
        self._check_names([name])
        active = [a for a in self.active_adapters if a != name]
        self._tuner.delete_adapter(name)
        self._sync(active)

    def _sync(self, active: Sequence[str]) -> None:
        """List the LoRA layers, switch to ``active``, set the base parameters' trainability
        (runs when adapters, trainability or extras change, not on ``adapters_only``)."""
        self._layers = [m for m in self.base.modules() if isinstance(m, BaseTunerLayer)]
        self._switch(active)
        mark_extra(self.base, self._extra)

    def _switch(self, names: Sequence[str]) -> None:
        """peft's ``set_adapter`` and trainability on the LoRA layers only (the model-level
        one walks every module): runs twice per ``adapters_only``, every stage-2 step, and
        once per route of a cLoRA forward."""
        names = list(dict.fromkeys(names))
        configs = self.peft_config
        frozen = [a for a in names if configs[a].inference_mode]
        idle = [a for a, c in configs.items() if not c.inference_mode and a not in names]
        for layer in self._layers:
            layer.set_adapter(names)
            if frozen:
                layer.set_requires_grad(frozen, False)
            if idle:
                layer.set_requires_grad(idle, True)
        self._tuner.active_adapter = names

    def set_active_adapters(self, names: Sequence[str]) -> None:
        """Adapters applied in forward (deltas summed); trainability is left as it was."""
        names = [names] if isinstance(names, str) else list(names)
        self._check_names(names)
        self._sync(names)

    def freeze_adapter(self, name: str) -> None:
        self._check_names([name])
        self.peft_config[name].inference_mode = True
        self._sync(self.active_adapters)

    def unfreeze_adapter(self, name: str) -> None:
        self._check_names([name])
        self.peft_config[name].inference_mode = False
        self._sync(self.active_adapters)

    def is_trainable(self, name: str) -> bool:
        self._check_names([name])
        return not self.peft_config[name].inference_mode

    def set_trainable_extra(self, patterns: Sequence[str]) -> None:
        """Replace the ``trainable_extra`` regexes (``[]`` freezes every base parameter, as
        debLoRA's stage 2 does to keep the stage-1 model fixed; a plain ``requires_grad_``
        would be undone by the next ``set_active_adapters``)."""
        self._extra = [re.compile(p) for p in patterns]
        check_extra(self._extra, self.base)
        self._sync(self.active_adapters)

    @contextmanager
    def adapters_only(self, names: Sequence[str]):
        """Temporarily run with only ``names`` active (``[]``: the base model)."""
        names = [names] if isinstance(names, str) else list(names)
        self._check_names(names)
        saved = self.active_adapters
        self._switch(names)
        try:
            yield self
        finally:
            self._switch(saved)

    def deterministic_features(self):
        """The base's deterministic-feature context (``SDBackbone``: fixed noise), or a no-op."""
        ctx = getattr(self.base, 'deterministic_features', None)
        return ctx() if ctx is not None else nullcontext()

    def train_adapter_dropout(self, names: Sequence[str], mode: bool = True) -> None:
        """Set the train/eval mode of the named adapters' LoRA dropout only (debLoRA's stage 2
        keeps the stage-1 path in eval mode while the new adapter trains with dropout)."""
        self._check_names(names)
        for layer in self._layers:
            for name in names:
                if name in getattr(layer, 'lora_dropout', {}):
                    layer.lora_dropout[name].train(mode)

    def merge_and_unload(self) -> nn.Module:
        """A plain copy of the backbone (its original keys) with the active adapters merged
        in: peft's ``merge_and_unload`` on a copy, the wrapper itself is left untouched."""
        plain = copy.deepcopy(self._tuner).merge_and_unload(adapter_names=self.active_adapters)
        return plain.requires_grad_(True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # runs before the `base` children load (torch and mmengine hand them slices of
        # this dict afterwards), so a slim checkpoint loads through any path
        slim.fill_slim_state_dict(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ module
    def init_weights(self) -> None:
        """No-op: the base was initialised (and loaded) before injection in ``__init__``."""
        self._is_init = True

    def forward(self, x: torch.Tensor):
        return self.base(x)

    def trainable_parameters(self) -> Dict[str, int]:
        """Trainable parameter counts: ``{'adapters': n, 'extra': m, 'total': n + m}``."""
        return count_trainable(self.base, self.peft_config)
