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
import hashlib
import json
import logging
import os.path as osp
import re
import warnings
from contextlib import contextmanager, nullcontext
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

from . import adapter_io

Targets = Union[str, Sequence[str]]
_ADAPTER_ATTRS = tuple(LoraLayer.adapter_layer_names)  # lora_A, lora_B, lora_embedding_*
_LORA_TARGET_TYPES = (nn.Linear, nn.Conv2d)


def clora_adapter_name(class_name: str) -> str:
    """Adapter name cLoRA uses for a class (`small-vehicle` -> `clora_small_vehicle`)."""
    return 'clora_' + re.sub(r'\W', '_', str(class_name))


def load_weights_file(path: str) -> Dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a torch / mmengine checkpoint.

    torch files are read with ``weights_only=True`` (mmengine's extras are allow-listed by
    ``mmdeblora.utils.register_checkpoint_safe_globals``); never with code execution. A
    broken torch file gets :func:`~mmdeblora.utils.load_checkpoint_file`'s message saying
    what is wrong with it, not torch's advice to switch ``weights_only`` off.
    """
    from mmdeblora.utils.checkpoint import load_checkpoint_file
    if not osp.isfile(path):
        raise FileNotFoundError(f'weights file {path!r} does not exist')
    if path.endswith('.safetensors'):
        from mmdeblora.utils.checkpoint import load_safetensors_file
        return load_safetensors_file(path)
    ckpt = load_checkpoint_file(path)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict):
        raise TypeError(f'{path!r} holds a {type(ckpt).__name__}, not a state dict')
    return ckpt


def _encode(meta: dict) -> torch.Tensor:
    return torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)


def _decode(state: torch.Tensor) -> dict:
    return json.loads(bytes(state.tolist()).decode())


def _checksum(value: torch.Tensor) -> float:
    """A cheap float64 sum: tells a tensor changed since a snapshot without hashing it."""
    value = value.detach()
    return float(value.to(torch.uint8).sum() if value.dtype == torch.bool
                 else value.sum(dtype=torch.float64))


def tensor_digest(value: torch.Tensor) -> str:
    """A short content hash (dtype, shape, bytes) that tells a rebuilt tensor from another."""
    flat = value.detach().cpu().contiguous().reshape(-1)
    digest = hashlib.sha256(f'{flat.dtype}{tuple(value.shape)}'.encode())
    digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()[:16]


def _own_weight_sources(backbone: dict) -> List[tuple]:
    """The wrapped backbone's own weight files (e.g. SDBackbone's ``pretrained`` folder, an
    ``init_cfg`` of type Pretrained): it rebuilds every tensor from them."""
    sources = []
    if isinstance(backbone.get('pretrained'), str) and backbone['pretrained']:
        sources.append((f'backbone.pretrained={backbone["pretrained"]}', None))
    init = backbone.get('init_cfg')
    for item in init if isinstance(init, (list, tuple)) else [init]:
        if isinstance(item, dict) and item.get('type') == 'Pretrained' and item.get('checkpoint'):
            sources.append((f'backbone.init_cfg.checkpoint={item["checkpoint"]}', None))
    return sources


@MODELS.register_module()
class LoRABackbone(BaseModule):
    """Freeze a backbone and train peft LoRA adapters (plus named extras) on it.

    Args:
        backbone: config of any registered backbone (``mmdet.ResNet``, ``SDBackbone``, ...).
        pretrained: local checkpoint loaded into the plain backbone before injection
            (mmengine checkpoint, raw state dict or ``.safetensors``).
        pretrained_prefix: keys under this prefix are taken (prefix stripped) when the
            checkpoint has any; the default reads a whole detector's checkpoint.
        pretrained_strict: a ``pretrained`` that does not fit the backbone (a tensor of
            another shape, or backbone tensors it does not hold) is an error; ``False``
            loads what fits and warns with the counts. Checkpoint tensors the backbone has
            no place for (e.g. torchvision's ``fc``) are only reported.
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
                 pretrained_strict: bool = True,
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
        # where the frozen base comes from, so that a slim checkpoint can leave it out:
        # (source, base keys it gives; None: all of them)
        self._rebuild: List[tuple] = _own_weight_sources(backbone)
        if pretrained:
            loaded = self._load_pretrained(pretrained, pretrained_prefix, pretrained_strict)
            self._rebuild.append((f'pretrained={pretrained}', loaded))
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
        self._tuner_layers: List[BaseTunerLayer] = []  # the peft layers, see _apply_state
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
    def _load_pretrained(self, path: str, prefix: Optional[str], strict: bool) -> List[str]:
        """Load the tensors of ``path`` that fit the plain backbone; returns their keys.

        Counts only what really loaded: a tensor of another shape is not "loaded", it is a
        misfit (an error unless ``strict`` is False), as are backbone tensors the file lacks.
        """
        state = load_weights_file(path)
        if prefix and any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        own = self.base.state_dict()
        if not set(own) & set(state):
            raise KeyError(f'pretrained={path!r} shares no key with {type(self.base).__name__} '
                           f'(checkpoint keys e.g. {sorted(state)[:5]}, model keys e.g. '
                           f'{sorted(own)[:5]}); check pretrained_prefix')
        fits = {k: v for k, v in state.items()
                if k in own and tuple(v.shape) == tuple(own[k].shape)}
        wrong = [f'{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the '
                 'model' for k in state if k in own and k not in fits]
        missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
        unused = [k for k in state if k not in own]
        name = type(self.base).__name__
        if (wrong or missing) and strict:
            raise ValueError(
                f'pretrained={path!r} does not fit {name}: {len(wrong)} tensor(s) of another '
                f'shape (e.g. {wrong[:3]}), {len(missing)} backbone tensor(s) missing from the '
                f'file (e.g. {missing[:3]}). Another architecture? Fix the backbone or the file, '
                'or set pretrained_strict=False to load only the tensors that fit')
        result = self.base.load_state_dict(fits, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys
        level = logging.WARNING if wrong or missing else logging.INFO
        print_log(f'LoRABackbone: loaded {len(fits)}/{len(own)} {name} tensors from {path}'
                  + (f'; NOT loaded: {len(wrong)} of another shape, {len(missing)} missing '
                     '(left as initialised)' if wrong or missing else '')
                  + (f'; {len(unused)} file tensor(s) unused (e.g. {unused[:3]})'
                     if unused else ''), logger='current', level=level)
        return sorted(fits)

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
        """Push the remembered active set and trainability into the peft layers and the
        base parameters (a walk over every parameter: runs when adapters, trainability or
        extras change). Also refreshes the list of peft layers ``_switch_active`` uses."""
        self._tuner_layers = list(self._lora_layers())
        self._switch_active(self._active)
        for name, param in self.base.named_parameters():
            if self._adapter_of_key(name) is None:
                param.requires_grad_(self._is_extra(name, self._extra))

    def _switch_active(self, names: Sequence[str]) -> None:
        """Make ``names`` (checked) the active set in every peft layer; trainability stays.

        Runs twice per ``adapters_only`` (every stage-2 step) and once per route of a cLoRA
        forward, so it touches only the LoRA layers (cached by ``_apply_state``) and their
        adapter tensors, never the base parameters: peft's ``set_adapter`` sets
        ``requires_grad`` from activeness, and the remembered trainability is put back
        where the two differ.
        """
        self._active = list(dict.fromkeys(names))
        active = list(self._active)
        fix = {a: t for a, t in self._trainable.items() if t != (a in active)}
        for layer in self._tuner_layers:
            layer.set_adapter(active)
            if not fix:
                continue
            for attr in _ADAPTER_ATTRS:
                for adapter, part in getattr(layer, attr).items():
                    if adapter not in fix:
                        continue
                    if isinstance(part, nn.Parameter):
                        part.requires_grad_(fix[adapter])
                        continue
                    # a LoRA A / B is one Linear or Conv2d: its own tensors, no generator
                    params = part.parameters() if part._modules else part._parameters.values()
                    for param in params:
                        if param is not None:
                            param.requires_grad_(fix[adapter])

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
        if isinstance(names, str):
            names = [names]
        self._check_names(names)
        saved = list(self._active)
        self._switch_active(names)
        try:
            yield self
        finally:
            self._switch_active(saved)

    # ------------------------------------------------------------------ de-biasing support
    def check_adapter_cfg(self, rank: Optional[int] = None, alpha: Optional[float] = None,
                          dropout: Optional[float] = None,
                          target_modules: Optional[Targets] = None) -> None:
        """Dry run of ``add_adapter``'s config: raise what it would raise, change nothing.

        Lets the debLoRA hook reject a bad ``adapter_cfg`` before stage 1 trains.
        """
        cfg = dict(self._defaults)
        cfg.update({k: v for k, v in dict(rank=rank, alpha=alpha, dropout=dropout,
                                          target_modules=target_modules).items()
                    if v is not None})
        if isinstance(cfg['target_modules'], tuple):
            cfg['target_modules'] = list(cfg['target_modules'])
        self._check_targets(LoraConfig(r=cfg['rank'], lora_alpha=cfg['alpha'],
                                       lora_dropout=cfg['dropout'],
                                       target_modules=cfg['target_modules']))

    def deterministic_features(self):
        """The base backbone's deterministic-feature context (e.g. ``SDBackbone``'s fixed
        diffusion noise), or a no-op for backbones whose forward draws nothing random."""
        ctx = getattr(self.base, 'deterministic_features', None)
        return ctx() if ctx is not None else nullcontext()

    def train_adapter_dropout(self, names: Sequence[str], mode: bool = True) -> None:
        """Set the train/eval mode of the named adapters' LoRA dropout only.

        debLoRA's stage 2 keeps the whole stage-1 path in eval mode (fixed norm statistics,
        no dropout on the frozen adapter) while the new adapter still trains with its own
        dropout.
        """
        self._check_names(names)
        for layer in self._lora_layers():
            for name in names:
                if name in getattr(layer, 'lora_dropout', {}):
                    layer.lora_dropout[name].train(mode)

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
        expected = self._check_adapter_state(state_dict, name)
        result = self.base.load_state_dict({expected[k]: v for k, v in state_dict.items()},
                                           strict=False)
        assert not result.unexpected_keys, result.unexpected_keys

    def save_adapters(self, path_dir: str, names: Optional[Sequence[str]] = None) -> List[str]:
        """Write adapters in peft's format (see ``adapter_io``); returns the weight files.

        ``DIR/adapter_config.json`` + ``adapter_model.safetensors`` for 'default',
        ``DIR/<name>/...`` for the others, as ``PeftModel.save_pretrained`` lays them out,
        and ``mmdeblora_adapters.json`` (order, active set, trainability) for
        ``load_adapters``. Base parameters trained through ``trainable_extra`` are not
        adapters and are not written (the training checkpoint holds them).
        """
        names = self.adapter_names if names is None else list(names)
        self._check_names(names)
        files = [adapter_io.write_peft_adapter(adapter_io.adapter_subdir(path_dir, n),
                                               self._configs[n], self.adapter_state_dict(n), n)
                 for n in names]
        adapter_io.write_index(path_dir, names, [a for a in self._active if a in names],
                               self._trainable)
        return files

    def load_adapters(self, path_dir: str, names: Optional[Sequence[str]] = None) -> None:
        """Load the adapters of a folder (``save_adapters``' or peft's; the older
        ``adapters.json`` layout too); adapters the model lacks are created.

        All or nothing: every file is read and checked first (finite values, supported
        config, keys and shapes); a failure part-way leaves the model as it was.
        """
        folder = adapter_io.read_adapter_folder(path_dir, list(names) if names else None)
        for item in folder.adapters:
            if item.name in self._configs and not adapter_io.same_config(
                    self._configs[item.name], item.cfg):
                raise ValueError(f'{item.source}: adapter {item.name!r} was saved with '
                                 f'{item.cfg}, the model has {self._configs[item.name]}')
        if folder.active is not None:
            known = set(self._configs) | {a.name for a in folder.adapters}
            if set(folder.active) - known:
                raise KeyError(f'{path_dir}: active adapters {folder.active} include unknown '
                               f'ones; adapters: {sorted(known)}')
        created = []
        saved = (list(self._active), dict(self._trainable))
        try:
            for item in folder.adapters:
                if item.name not in self._configs:
                    self.add_adapter(item.name, activate=False, **item.cfg)
                    created.append(item.name)
                self._check_adapter_state(item.tensors, item.name, item.source)
        except Exception:
            for name in created:
                self._remove_adapter(name)
            self._active, self._trainable = saved[0], saved[1]
            self._apply_state()
            raise
        for item in folder.adapters:  # every check passed: nothing below can fail
            self.load_adapter_state_dict(item.tensors, item.name)
            self._trainable[item.name] = folder.trainable.get(item.name, True)
        self.set_active_adapters(folder.active if folder.active is not None
                                 else self._active + [a.name for a in folder.adapters
                                                      if a.name not in self._active])

    def _check_adapter_state(self, state_dict: Dict[str, torch.Tensor], name: str,
                             source: str = 'state dict') -> Dict[str, str]:
        """Keys and shapes of ``state_dict`` against adapter ``name``; the key map."""
        expected, shapes = {}, {}
        for key, value in self.base.state_dict().items():
            adapter, short = self._split_key(key)
            if adapter == name:
                expected[short], shapes[short] = key, tuple(value.shape)
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        if missing or unexpected:
            raise KeyError(f'{source}: adapter {name!r} state dict mismatch: missing '
                           f'{missing[:5]}, unexpected {unexpected[:5]}')
        wrong = [f'{k}: {tuple(v.shape)} vs {shapes[k]}' for k, v in state_dict.items()
                 if tuple(v.shape) != shapes[k]]
        if wrong:
            raise ValueError(f'{source}: adapter {name!r} shape mismatch (given vs adapter; '
                             f'a different rank?): {wrong[:3]}')
        return expected

    def _remove_adapter(self, name: str) -> None:
        """Undo ``add_adapter`` (used to roll back a failed ``load_adapters``)."""
        from peft.tuners.tuners_utils import delete_adapter
        delete_adapter(self.base, name, prefix='lora_', layer_cls=LoraLayer)
        getattr(self.base, 'peft_config', {}).pop(name, None)
        self._configs.pop(name, None)
        self._trainable.pop(name, None)
        self._active = [a for a in self._active if a != name]

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
        return _encode(dict(adapters=self._configs, active=self._active,
                            trainable=self._trainable))

    def set_extra_state(self, state: torch.Tensor) -> None:
        """Runs before the ``base`` tensors load: create missing adapters, restore state."""
        meta = _decode(state)
        for name, cfg in meta['adapters'].items():
            if name not in self._configs:
                self.add_adapter(name, activate=False, **cfg)
        self._trainable.update({k: bool(v) for k, v in meta['trainable'].items()})
        self.set_active_adapters(meta['active'])

    # ------------------------------------------------------------------ slim checkpoints
    def rebuild_sources(self) -> List[str]:
        """The weight files this module's frozen base is rebuilt from when it is built from
        its config (``[]``: a random-init base, which a slim checkpoint cannot leave out)."""
        return [src for src, _ in self._rebuild]

    def _rebuildable(self) -> Iterator[tuple]:
        """``(key, tensor)`` of the base tensors the config rebuilds from files (keys
        relative to this module); adapters never, random-init tensors never."""
        if not self._rebuild:
            return
        from_files = None if any(keys is None for _, keys in self._rebuild) else \
            set().union(*(keys for _, keys in self._rebuild))
        for key, value in self.base.state_dict().items():
            if self._split_key(key)[0] is not None:
                continue  # an adapter tensor: always kept
            if from_files is not None and key.replace('.base_layer.', '.') not in from_files:
                continue  # left as initialised when `pretrained` was loaded
            yield f'base.{key}', value

    def base_snapshot(self) -> Dict[str, tuple]:
        """The rebuildable base tensors as they are now (call it right after building):
        ``{key: (digest, checksum, version, data pointer)}``, the reference of
        ``make_slim``. One hashing pass (SD v1.5: about 4 s on one core)."""
        return {k: (tensor_digest(v), _checksum(v), v._version, v.data_ptr())
                for k, v in self._rebuildable()}

    def make_slim(self, state_dict: Dict[str, torch.Tensor], prefix: str,
                  reference: Dict[str, tuple]) -> List[str]:
        """Leave out of ``state_dict`` (this module's tensors are under ``prefix``) the base
        tensors that are still the ones in ``reference`` (``base_snapshot()`` taken when
        the model was built from its files); returns the keys left out.

        Their digests go into this module's ``_extra_state``, so whatever loads the
        checkpoint (runner, ``load_state_dict``, tools) puts the rebuilt tensors in their
        place only after checking they are the ones trained with (``fill_slim_state_dict``).
        Tensors that changed since (trained norms, running statistics, a base loaded from a
        full checkpoint) stay in the checkpoint. "Still the same": an equal checksum and,
        unless torch's in-place version counter and storage are unchanged, an equal digest
        (so frozen tensors are not hashed again at every checkpoint).
        """
        extra = prefix + '_extra_state'
        if extra not in state_dict:
            raise KeyError(f'{extra!r} is not in the state dict: not this module\'s')
        left = {}
        for key, value in self._rebuildable():
            ref = reference.get(key)
            if ref is None or prefix + key not in state_dict or _checksum(value) != ref[1]:
                continue
            if (value._version, value.data_ptr()) == ref[2:] or tensor_digest(value) == ref[0]:
                left[key] = ref[0]
        for key in left:
            del state_dict[prefix + key]
        meta = _decode(state_dict[extra])
        meta['slim'] = dict(sources=self.rebuild_sources(), tensors=left)
        state_dict[extra] = _encode(meta)
        return [prefix + k for k in left]

    def fill_slim_state_dict(self, state_dict: Dict[str, torch.Tensor], prefix: str) -> int:
        """Complete a slim checkpoint's ``state_dict`` with this module's rebuilt base, in
        place; returns how many tensors were filled in (0 for a full checkpoint).

        Refuses (RuntimeError) when a rebuilt tensor is not the one the checkpoint was
        trained with (another ``pretrained``, a random-init base): never loads wrong weights.
        """
        extra = state_dict.get(prefix + '_extra_state')
        slim = _decode(extra).get('slim') if extra is not None else None
        todo = {k: d for k, d in (slim or {}).get('tensors', {}).items()
                if prefix + k not in state_dict}
        if not todo:
            return 0
        own = {f'base.{k}': v for k, v in self.base.state_dict().items()}
        absent = [k for k in todo if k not in own]
        differ = [k for k in todo if k in own and tensor_digest(own[k]) != todo[k]]
        if absent or differ:
            raise RuntimeError(
                f'slim checkpoint: {len(differ) + len(absent)} of the {len(todo)} frozen base '
                f'tensors it left out (to be rebuilt from {slim.get("sources")}) differ in the '
                f'model built now (e.g. {(absent + differ)[:3]}); build the model with the same '
                'weight files it was trained with, or load a full checkpoint')
        for key in todo:
            state_dict[prefix + key] = own[key]
        return len(todo)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # runs before the `base` children load (torch and mmengine hand them slices of
        # this dict afterwards), so a slim checkpoint loads through any path
        self.fill_slim_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
