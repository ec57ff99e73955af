"""LoRA around any registered backbone, through peft (``LoraConfig`` + ``inject_adapter_in_model``).

Why a wrapper and not ``init_cfg``: peft renames every wrapped layer's weights to
``...base_layer.weight``, so a checkpoint loaded after injection would silently miss them.
The wrapper therefore builds the backbone, runs its own ``init_weights``, loads ``pretrained``
into the *plain* backbone, and only then injects the adapters; its own ``init_weights`` is a
no-op so the runner cannot re-initialise the base or the (zero-initialised) LoRA ``B``.

Several named adapters can live on one backbone (the debLoRA stage adds a second one, cLoRA
adds one per class). Which adapters run in ``forward`` (active) and which get gradients
(trainable) are kept apart: peft's ``set_adapter`` switches ``requires_grad`` on for every
active adapter, so the wrapper re-applies the trainability it remembers after each switch.
"""
import copy
import json
import os
import os.path as osp
import re
import warnings
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmrotate.registry import MODELS
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer, check_target_module_exists
from peft.utils import _get_submodules

Targets = Union[str, Sequence[str]]
ADAPTER_JSON = 'adapters.json'
_ADAPTER_ATTRS = tuple(LoraLayer.adapter_layer_names)  # lora_A, lora_B, lora_embedding_*
_LORA_TARGET_TYPES = (nn.Linear, nn.Conv2d)


def clora_adapter_name(class_name: str) -> str:
    """Adapter name cLoRA uses for a class (`small-vehicle` -> `clora_small_vehicle`)."""
    return 'clora_' + re.sub(r'\W', '_', str(class_name))


def load_weights_file(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch / mmengine checkpoint.

    torch files are read with ``weights_only=True`` (mmengine's extras are allow-listed by
    ``mmdeblora.utils.register_checkpoint_safe_globals``); never with code execution.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'weights file {path!r} does not exist')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        return load_file(path, device='cpu')
    ckpt = torch.load(path, map_location='cpu', weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict):
        raise TypeError(f'{path!r} holds a {type(ckpt).__name__}, not a state dict')
    return ckpt


@MODELS.register_module()
class LoRABackbone(BaseModule):
    """Freeze a backbone and train peft LoRA adapters (plus named extras) on it.

    Args:
        backbone: config of any registered backbone (``mmdet.ResNet``, ``SDBackbone``, ...).
        pretrained: local checkpoint loaded into the plain backbone before injection
            (mmengine checkpoint, raw state dict or ``.safetensors``).
        pretrained_prefix: keys under this prefix are taken (prefix stripped) when the
            checkpoint has any; the default reads a whole detector's checkpoint.
        rank, alpha, dropout: LoRA ``r``, ``lora_alpha``, ``lora_dropout`` (scaling alpha/r).
        target_modules: peft semantics: a list of module-name suffixes, or one regex string
            matched against full module names. Linear and Conv2d layers. ``None`` takes the
            backbone's ``default_lora_target_modules`` (SDBackbone: attention projections).
        adapter_name: name of the first adapter.
        trainable_extra: regexes (``re.fullmatch``) of base parameter names kept trainable,
            e.g. ``r'.*bn\\d*\\..*'`` for norms.
        clora_classes: cLoRA, one extra adapter per class (``clora_<class>``), each meant to
            be trained on that class's samples in its own run.
        clora_select: the class whose cLoRA adapter this run trains; it becomes the only
            active and trainable adapter (all others, ``adapter_name`` included, frozen).
    """

    def __init__(self,
                 backbone: dict,
                 pretrained: Optional[str] = None,
                 pretrained_prefix: Optional[str] = 'backbone.',
                 rank: int = 8,
                 alpha: float = 16,
                 dropout: float = 0.0,
                 target_modules: Optional[Targets] = None,
                 adapter_name: str = 'default',
                 trainable_extra: Sequence[str] = (),
                 clora_classes: Optional[Sequence[str]] = None,
                 clora_select: Optional[str] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.base = MODELS.build(backbone)
        if hasattr(self.base, 'init_weights'):
            self.base.init_weights()
        if pretrained:
            self._load_pretrained(pretrained, pretrained_prefix)
        if target_modules is None:
            target_modules = getattr(self.base, 'default_lora_target_modules', None)
            if target_modules is None:
                raise ValueError(f'{type(self.base).__name__} names no default LoRA targets; '
                                 'set target_modules')
        if isinstance(target_modules, (list, tuple)):
            target_modules = list(target_modules)
        self._defaults = dict(rank=rank, alpha=alpha, dropout=dropout,
                              target_modules=target_modules)
        self._configs: Dict[str, dict] = {}
        self._trainable: Dict[str, bool] = {}
        self._active: List[str] = []
        self._extra = [re.compile(p) for p in trainable_extra]
        self.add_adapter(adapter_name)
        self._check_extras()
        if clora_classes:
            for cls in clora_classes:
                self.add_adapter(clora_adapter_name(cls), activate=False)
        if clora_select is not None:
            chosen = clora_adapter_name(clora_select)
            if chosen not in self._configs:
                raise ValueError(f'clora_select={clora_select!r} is not in clora_classes '
                                 f'{list(clora_classes or [])}')
            for name in self._configs:
                self._trainable[name] = name == chosen
            self.set_active_adapters([chosen])
        self._is_init = True  # the base was initialised above; LoRA B must stay zero

    # ------------------------------------------------------------------ building
    def _load_pretrained(self, path: str, prefix: Optional[str]) -> None:
        from mmengine.runner.checkpoint import load_state_dict
        state = load_weights_file(path)
        if prefix and any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = set(self.base.state_dict())
        if not own & set(state):
            raise KeyError(f'pretrained={path!r} shares no key with {type(self.base).__name__} '
                           f'(checkpoint keys e.g. {sorted(state)[:5]}, model keys e.g. '
                           f'{sorted(own)[:5]}); check pretrained_prefix')
        load_state_dict(self.base, state, strict=False, logger='current')
        print_log(f'LoRABackbone: loaded {len(own & set(state))}/{len(own)} base tensors '
                  f'from {path}', logger='current')

    def _candidate_names(self) -> List[str]:
        """Names of the layers LoRA could wrap (peft wrappers count as their base)."""
        names = []
        for name, mod in self.base.named_modules():
            if '.lora_' in name or name.endswith('base_layer') or '.base_layer.' in name:
                continue
            if isinstance(mod, BaseTunerLayer) or isinstance(mod, _LORA_TARGET_TYPES):
                names.append(name)
        return names

    def _check_targets(self, config: LoraConfig) -> None:
        names = self._candidate_names()
        if not any(check_target_module_exists(config, n) for n in names):
            shown = ', '.join(names[:25]) + (' ...' if len(names) > 25 else '')
            raise ValueError(f'target_modules={config.target_modules!r} matches no Linear or '
                             f'Conv2d layer of {type(self.base).__name__}; layers that exist '
                             f'include: {shown}')

    def _check_extras(self) -> None:
        names = [n for n, _ in self.base.named_parameters()]
        for pat in self._extra:
            if not any(self._is_extra(n, [pat]) for n in names):
                raise ValueError(f'trainable_extra pattern {pat.pattern!r} matches no parameter '
                                 f'of {type(self.base).__name__}, e.g. {names[:8]}')

    @staticmethod
    def _is_extra(name: str, patterns: Sequence[re.Pattern]) -> bool:
        plain = name.replace('.base_layer.', '.')
        return any(p.fullmatch(name) or p.fullmatch(plain) for p in patterns)

    # ------------------------------------------------------------------ adapters
    @property
    def adapter_names(self) -> List[str]:
        return list(self._configs)

    @property
    def active_adapters(self) -> List[str]:
        return list(self._active)

    def add_adapter(self, name: str, rank: Optional[int] = None, alpha: Optional[float] = None,
                    dropout: Optional[float] = None, target_modules: Optional[Targets] = None,
                    activate: bool = True) -> None:
        """Inject a new adapter (LoRA B = 0, so outputs are unchanged); trainable.

        ``activate`` (default True) adds it to the active set, so it gets gradients at once.
        """
        if name in self._configs:
            raise ValueError(f'adapter {name!r} already exists')
        if not re.fullmatch(r'[A-Za-z_]\w*', name):
            raise ValueError(f'adapter name {name!r} must be an identifier (no dots)')
        cfg = dict(rank=self._defaults['rank'] if rank is None else rank,
                   alpha=self._defaults['alpha'] if alpha is None else alpha,
                   dropout=self._defaults['dropout'] if dropout is None else dropout,
                   target_modules=(self._defaults['target_modules']
                                   if target_modules is None else target_modules))
        config = LoraConfig(r=cfg['rank'], lora_alpha=cfg['alpha'], lora_dropout=cfg['dropout'],
                            target_modules=cfg['target_modules'], init_lora_weights=True)
        self._check_targets(config)
        with warnings.catch_warnings():  # "Already found a `peft_config` attribute"
            warnings.simplefilter('ignore', UserWarning)
            inject_adapter_in_model(config, self.base, adapter_name=name)
        self._configs[name] = cfg
        self._trainable[name] = True
        if activate:
            self._active.append(name)
        self._apply_state()

    def _lora_layers(self) -> Iterator[BaseTunerLayer]:
        return (m for m in self.base.modules() if isinstance(m, BaseTunerLayer))

    def _apply_state(self) -> None:
        """Push the remembered active set and trainability into the peft layers."""
        for layer in self._lora_layers():
            layer.set_adapter(list(self._active))
        for name, param in self.base.named_parameters():
            adapter = self._adapter_of_key(name)
            if adapter is not None:
                param.requires_grad_(self._trainable[adapter])
            else:
                param.requires_grad_(self._is_extra(name, self._extra))

    def _check_names(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self._configs]
        if unknown:
            raise KeyError(f'unknown adapter(s) {unknown}; adapters: {self.adapter_names}')

    def set_active_adapters(self, names: Sequence[str]) -> None:
        """Adapters applied in forward (deltas summed); trainability is left as it was."""
        if isinstance(names, str):
            names = [names]
        self._check_names(names)
        self._active = list(dict.fromkeys(names))
        self._apply_state()

    def freeze_adapter(self, name: str) -> None:
        self._check_names([name])
        self._trainable[name] = False
        self._apply_state()

    def unfreeze_adapter(self, name: str) -> None:
        self._check_names([name])
        self._trainable[name] = True
        self._apply_state()

    def set_trainable_extra(self, patterns: Sequence[str]) -> None:
        """Replace the ``trainable_extra`` regexes (``[]`` freezes every base parameter).

        debLoRA's stage 2 freezes the norms trained in stage 1 so that the stage-1 model
        (the source of its targets) stays fixed; a plain ``requires_grad_`` would be undone
        by the next ``set_active_adapters``.
        """
        self._extra = [re.compile(p) for p in patterns]
        self._check_extras()
        self._apply_state()

    def is_trainable(self, name: str) -> bool:
        self._check_names([name])
        return self._trainable[name]

    @contextmanager
    def adapters_only(self, names: Sequence[str]):
        """Temporarily run with only ``names`` active (``[]``: the base model)."""
        saved = list(self._active)
        self.set_active_adapters(names)
        try:
            yield self
        finally:
            self.set_active_adapters(saved)

    # ------------------------------------------------------------------ state
    @staticmethod
    def _split_key(key: str):
        """(adapter, key without the adapter segment) for LoRA tensors, else (None, key)."""
        parts = key.split('.')
        for i, part in enumerate(parts[:-1]):
            if part in _ADAPTER_ATTRS:
                return parts[i + 1], '.'.join(parts[:i + 1] + parts[i + 2:])
        return None, key

    def _adapter_of_key(self, key: str) -> Optional[str]:
        adapter, _ = self._split_key(key)
        return adapter if adapter in self._configs else None

    def adapter_state_dict(self, name: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """One adapter's tensors, keys without the adapter name (portable between names);
        with ``name=None`` every adapter's tensors under their full ``base`` keys."""
        out = {}
        if name is not None:
            self._check_names([name])
        for key, value in self.base.state_dict().items():
            adapter, short = self._split_key(key)
            if adapter is None or adapter not in self._configs:
                continue
            if name is None:
                out[key] = value.detach().clone()
            elif adapter == name:
                out[short] = value.detach().clone()
        return out

    def load_adapter_state_dict(self, state_dict: Dict[str, torch.Tensor], name: str) -> None:
        """Load tensors from ``adapter_state_dict(some_name)`` into adapter ``name``."""
        self._check_names([name])
        expected, shapes = {}, {}
        for key, value in self.base.state_dict().items():
            adapter, short = self._split_key(key)
            if adapter == name:
                expected[short], shapes[short] = key, tuple(value.shape)
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise KeyError(f'adapter {name!r} state dict mismatch: missing {missing[:5]}, '
                           f'unexpected {unexpected[:5]}')
        wrong = [f'{k}: {tuple(v.shape)} vs {shapes[k]}' for k, v in state_dict.items()
                 if tuple(v.shape) != shapes[k]]
        if wrong:
            raise ValueError(f'adapter {name!r} shape mismatch (given vs adapter; a different '
                             f'rank?): {wrong[:3]}')
        result = self.base.load_state_dict({expected[k]: v for k, v in state_dict.items()},
                                           strict=False)
        assert not result.unexpected_keys, result.unexpected_keys

    def save_adapters(self, path_dir: str) -> List[str]:
        """One ``<name>.safetensors`` per adapter plus ``adapters.json`` (configs, state)."""
        from safetensors.torch import save_file
        os.makedirs(path_dir, exist_ok=True)
        files = []
        for name in self._configs:
            state = {k: v.contiguous() for k, v in self.adapter_state_dict(name).items()}
            files.append(osp.join(path_dir, f'{name}.safetensors'))
            save_file(state, files[-1], metadata={'adapter': name})
        meta = dict(active=self._active,
                    adapters={n: dict(c, trainable=self._trainable[n])
                              for n, c in self._configs.items()})
        with open(osp.join(path_dir, ADAPTER_JSON), 'w') as f:
            json.dump(meta, f, indent=2)
        return files

    def load_adapters(self, path_dir: str) -> None:
        """Load what ``save_adapters`` wrote; adapters not present yet are created."""
        from safetensors.torch import load_file
        meta_path = osp.join(path_dir, ADAPTER_JSON)
        if not osp.isfile(meta_path):
            raise FileNotFoundError(f'{meta_path!r} does not exist (not a save_adapters folder)')
        with open(meta_path) as f:
            meta = json.load(f)
        for name, cfg in meta['adapters'].items():
            if name not in self._configs:
                self.add_adapter(name, rank=cfg['rank'], alpha=cfg['alpha'],
                                 dropout=cfg['dropout'], target_modules=cfg['target_modules'],
                                 activate=False)
            self.load_adapter_state_dict(
                load_file(osp.join(path_dir, f'{name}.safetensors')), name)
            self._trainable[name] = bool(cfg.get('trainable', True))
        self.set_active_adapters(meta['active'])

    def merge_and_unload(self) -> nn.Module:
        """A plain copy of the backbone with the active adapters merged into its weights.

        The wrapper itself is left untouched; the copy's state dict has the original
        backbone's keys, so it loads into a config without ``LoRABackbone``.
        """
        plain = copy.deepcopy(self.base)
        keys = [k for k, m in plain.named_modules() if isinstance(m, BaseTunerLayer)]
        for key in keys:
            parent, target, leaf = _get_submodules(plain, key)
            present = [a for a in self._active if a in target.lora_A or a in target.lora_B]
            if present:
                target.merge(adapter_names=present)
            setattr(parent, leaf, target.get_base_layer())
        if hasattr(plain, 'peft_config'):
            del plain.peft_config
        for p in plain.parameters():
            p.requires_grad_(True)
        return plain

    # ------------------------------------------------------------------ checkpoints
    def get_extra_state(self) -> torch.Tensor:
        """The adapters' configs, active set and trainability, so that a checkpoint is
        self-describing (adapters added at run time, e.g. by the debLoRA hook, are
        re-created on load). JSON in a uint8 tensor: safe under ``weights_only=True`` and a
        tensor like every other state-dict entry."""
        meta = dict(adapters=self._configs, active=self._active, trainable=self._trainable)
        return torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)

    def set_extra_state(self, state: torch.Tensor) -> None:
        """Runs before the ``base`` tensors load: create missing adapters, restore state."""
        meta = json.loads(bytes(state.tolist()).decode())
        for name, cfg in meta['adapters'].items():
            if name not in self._configs:
                self.add_adapter(name, activate=False, **cfg)
        self._trainable.update({k: bool(v) for k, v in meta['trainable'].items()})
        self.set_active_adapters(meta['active'])

    # ------------------------------------------------------------------ module
    def init_weights(self) -> None:
        """No-op: the base was initialised (and loaded) before injection in ``__init__``."""
        self._is_init = True

    def forward(self, x: torch.Tensor):
        return self.base(x)

    def trainable_parameters(self) -> Dict[str, int]:
        """Trainable parameter counts: ``{'adapters': n, 'extra': m, 'total': n + m}``."""
        counts = dict(adapters=0, extra=0)
        for name, p in self.base.named_parameters():
            if p.requires_grad:
                counts['adapters' if self._adapter_of_key(name) else 'extra'] += p.numel()
        counts['total'] = counts['adapters'] + counts['extra']
        return counts
