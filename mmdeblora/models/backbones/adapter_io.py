"""Adapters on disk and in checkpoints: peft's folder format (plus reading our older one),
the adapters' record in a checkpoint, and the ``LoraConfig`` of an adapter config (checked
against the backbone's layers). ``AdapterIOMixin`` gives ``LoRABackbone`` its methods for
them: ``adapter_state_dict``, ``save_adapters`` / ``load_adapters``, ``_extra_state``.

Layout written by ``save_adapters(backbone, DIR)``, the one peft's
``PeftModel.save_pretrained`` uses for several adapters:

    DIR/adapter_config.json + DIR/adapter_model.safetensors        adapter 'default'
    DIR/<name>/adapter_config.json + adapter_model.safetensors     every other adapter
    DIR/mmdeblora_adapters.json                                    ours: order, active set,
                                                                   trainability

So ``PeftModel.from_pretrained(plain_backbone, DIR)`` loads 'default' and
``peft_model.load_adapter(DIR/<name>, adapter_name=<name>)`` any other; the tensor keys are
peft's (``base_model.model.<module>.lora_A.weight``, no adapter name) and
``set_peft_model_state_dict`` accepts them on a model injected with
``inject_adapter_in_model`` too. Folders written by peft itself (no index file) are read as
one adapter. The format before peft's (``adapters.json`` + ``<name>.safetensors``) is still
read, so adapters saved by earlier versions keep loading; it is no longer written.

Everything is read and checked (finite values, a LoRA configuration we can build) before
the caller changes its model: see ``read_adapter_folder``. A JSON file that does not parse
or lacks what it needs is an error naming that file. Files are written through
``mmdeblora.utils.atomic`` (a temporary beside the final name, renamed into place, with the
permissions the umask gives).

In a checkpoint the adapters are described by the backbone's ``_extra_state``
(:meth:`AdapterIOMixin.get_extra_state`): JSON ``{adapters: {name: cfg}, active: [...],
trainable: {name: bool}}`` in a uint8 tensor, ``cfg`` the ``add_adapter`` keywords
(:func:`lora_cfg`), plus ``slim`` in a slim checkpoint (``slim.py``). The format has not
changed since it was added.
"""
import json
import math
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
from peft import LoraConfig, get_peft_model_state_dict, set_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer, check_target_module_exists

from mmdeblora.utils.atomic import atomic_path
from mmdeblora.utils.checkpoint import load_safetensors_file

PEFT_CONFIG = 'adapter_config.json'
PEFT_WEIGHTS = 'adapter_model.safetensors'
PEFT_PREFIX = 'base_model.model.'
INDEX = 'mmdeblora_adapters.json'
LEGACY_INDEX = 'adapters.json'  # before peft's format: adapters.json + <name>.safetensors

# LoraConfig fields LoRABackbone cannot reproduce: a folder using them is refused, not
# loaded into a different adapter than the one trained
_UNSUPPORTED = dict(use_dora=False, use_rslora=False, rank_pattern={}, alpha_pattern={},
                    modules_to_save=None, layers_to_transform=None, layers_pattern=None,
                    bias='none', lora_bias=False, fan_in_fan_out=False, exclude_modules=None)


@dataclass
class AdapterFile:
    """One adapter as read from disk: its LoRABackbone config and tensors (short keys)."""
    name: str
    cfg: dict  # rank, alpha, dropout, target_modules
    tensors: Dict[str, torch.Tensor]
    source: str


@dataclass
class AdapterFolder:
    adapters: List[AdapterFile]
    active: Optional[List[str]] = None  # None: leave the model's active set as it is
    trainable: Dict[str, bool] = field(default_factory=dict)
    layout: str = 'peft'


def _targets(value):
    return sorted(value) if isinstance(value, (set, list, tuple)) else value


def lora_cfg(config: LoraConfig) -> dict:
    """The ``add_adapter`` keywords (rank, alpha, dropout, target_modules) of a peft config."""
    return dict(rank=config.r, alpha=config.lora_alpha, dropout=config.lora_dropout,
                target_modules=_targets(config.target_modules))


def encode_meta(meta: dict) -> torch.Tensor:
    """JSON in a uint8 tensor: an ``_extra_state`` safe under ``weights_only=True``."""
    return torch.tensor(list(json.dumps(meta).encode()), dtype=torch.uint8)


def decode_meta(state: torch.Tensor) -> dict:
    return json.loads(bytes(state.tolist()).decode())


def adapter_of_key(key: str) -> Optional[str]:
    """The adapter a LoRA tensor key belongs to (``...lora_A.<name>.weight``), else None."""
    parts = key.split('.')
    for i, part in enumerate(parts[:-1]):
        if part in LoraLayer.adapter_layer_names:
            return parts[i + 1]
    return None


def build_lora_config(cfg: dict) -> LoraConfig:
    """The peft config of ``add_adapter`` keywords (rank, alpha, dropout, target_modules);
    the inverse of :func:`lora_cfg`."""
    targets = cfg['target_modules']
    return LoraConfig(r=cfg['rank'], lora_alpha=cfg['alpha'], lora_dropout=cfg['dropout'],
                      target_modules=list(targets) if isinstance(targets, tuple) else targets,
                      init_lora_weights=True)


def check_targets(config: LoraConfig, base: nn.Module) -> LoraConfig:
    """``config``, or an error listing ``base``'s layers when its ``target_modules`` match
    no Linear or Conv2d layer (a layer peft wrapped already counts as its base layer)."""
    names = [n for n, m in base.named_modules()
             if isinstance(m, (BaseTunerLayer, nn.Linear, nn.Conv2d)) and not (
                 '.lora_' in n or n.endswith('base_layer') or '.base_layer.' in n)]
    if not any(check_target_module_exists(config, n) for n in names):
        shown = ', '.join(names[:25]) + (' ...' if len(names) > 25 else '')
        raise ValueError(f'target_modules={config.target_modules!r} matches no Linear or '
                         f'Conv2d layer of {type(base).__name__}; layers that exist '
                         f'include: {shown}')
    return config


def _atomic_json(obj, path: str) -> None:
    with atomic_path(path) as tmp, open(tmp, 'w') as f:
        json.dump(obj, f, indent=2, default=lambda o: sorted(o) if isinstance(o, set) else str(o))


_REWRITE = ('write the folder again (LoRABackbone.save_adapters, or peft\'s save_pretrained) '
            'or restore it from a copy')


def _read_json(path: str, required: Dict[str, str]) -> dict:
    """A JSON object from ``path`` with the ``required`` keys (key -> what it holds)."""
    try:
        with open(path, encoding='utf-8') as f:
            raw = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f'{path}: not valid JSON ({e}); {_REWRITE}') from e
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: holds a JSON {type(raw).__name__}, not an object; '
                         f'{_REWRITE}')
    missing = [f'{k} ({what})' for k, what in required.items() if raw.get(k) is None]
    if missing:
        raise ValueError(f'{path}: missing {", ".join(missing)}; {_REWRITE}')
    return raw


def _lora_config(raw: dict, cfg_path: str) -> dict:
    """LoRABackbone's adapter config from peft's ``adapter_config.json`` content."""
    r, alpha = raw['r'], raw['lora_alpha']
    dropout, targets = raw.get('lora_dropout', 0.0), raw['target_modules']
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise ValueError(f'{cfg_path}: r={r!r}, the LoRA rank must be a positive integer; '
                         f'{_REWRITE}')
    for key, value in (('lora_alpha', alpha), ('lora_dropout', dropout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{cfg_path}: {key}={value!r} is not a number; {_REWRITE}')
    if not (isinstance(targets, str) or (
            isinstance(targets, list) and targets
            and all(isinstance(t, str) for t in targets))):
        raise ValueError(f'{cfg_path}: target_modules={targets!r} is neither a regex nor a '
                         f'non-empty list of module names; {_REWRITE}')
    return dict(rank=r, alpha=alpha, dropout=float(dropout),
                target_modules=_targets(targets))


def adapter_subdir(path_dir: str, name: str) -> str:
    """peft's place for adapter ``name``: the folder itself for 'default', else a sub-folder."""
    return path_dir if name == 'default' else osp.join(path_dir, name)


def write_peft_adapter(folder: str, cfg: dict, tensors: Dict[str, torch.Tensor],
                       name: str) -> str:
    """``adapter_config.json`` + ``adapter_model.safetensors`` in ``folder``; returns the
    weights file. Each file is written beside its final name and then renamed."""
    from safetensors.torch import save_file
    os.makedirs(folder, exist_ok=True)
    weights = osp.join(folder, PEFT_WEIGHTS)
    with atomic_path(weights) as tmp:
        save_file({PEFT_PREFIX + k: v.detach().cpu().contiguous()
                   for k, v in tensors.items()}, tmp, metadata={'format': 'pt', 'adapter': name})
    _atomic_json(build_lora_config(cfg).to_dict(), osp.join(folder, PEFT_CONFIG))
    return weights


def write_index(path_dir: str, names: List[str], active: List[str],
                trainable: Dict[str, bool]) -> None:
    _atomic_json(dict(format='peft', adapters={n: osp.relpath(adapter_subdir(path_dir, n),
                                                              path_dir) for n in names},
                      active=list(active), trainable={n: trainable[n] for n in names}),
                 osp.join(path_dir, INDEX))


def _check_finite(tensors: Dict[str, torch.Tensor], source: str) -> None:
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f'{source}: tensor {key!r} has {bad} non-finite value(s) '
                             '(NaN/inf); refusing to load a broken adapter')


def _read_peft_adapter(folder: str, name: str) -> AdapterFile:
    cfg_path, weights = osp.join(folder, PEFT_CONFIG), osp.join(folder, PEFT_WEIGHTS)
    for path in (cfg_path, weights):
        if not osp.isfile(path):
            raise FileNotFoundError(f'adapter {name!r}: {path!r} does not exist')
    raw = _read_json(cfg_path, dict(r='the LoRA rank', lora_alpha='the LoRA scale numerator',
                                    target_modules='the adapted layers'))
    if raw.get('peft_type', 'LORA') != 'LORA':
        raise ValueError(f'{cfg_path}: peft_type {raw.get("peft_type")!r}, only LORA adapters '
                         'can be loaded into LoRABackbone')
    odd = {k: raw[k] for k, default in _UNSUPPORTED.items()
           if raw.get(k, default) not in (default, None, {}, False)}
    if odd:
        raise ValueError(f'{cfg_path}: LoRABackbone cannot reproduce {odd} (plain LoRA only: '
                         'r, lora_alpha, lora_dropout, target_modules)')
    cfg = _lora_config(raw, cfg_path)
    tensors = load_safetensors_file(weights)
    strange = [k for k in tensors if not k.startswith(PEFT_PREFIX)]
    if strange:
        raise KeyError(f'{weights}: keys without peft\'s {PEFT_PREFIX!r} prefix, e.g. '
                       f'{strange[:3]}')
    _check_finite(tensors, weights)
    tensors = {k[len(PEFT_PREFIX):]: v for k, v in tensors.items()}
    return AdapterFile(name, cfg, tensors, weights)


def _read_legacy(path_dir: str) -> AdapterFolder:
    meta = _read_json(osp.join(path_dir, LEGACY_INDEX),
                      dict(adapters='name -> config', active='the active adapters'))
    adapters = []
    for name, cfg in meta['adapters'].items():
        path = osp.join(path_dir, f'{name}.safetensors')
        if not osp.isfile(path):
            raise FileNotFoundError(f'adapter {name!r}: {path!r} does not exist')
        tensors = load_safetensors_file(path)
        _check_finite(tensors, path)
        adapters.append(AdapterFile(name, dict(rank=cfg['rank'], alpha=cfg['alpha'],
                                               dropout=cfg['dropout'],
                                               target_modules=cfg['target_modules']),
                                    tensors, path))
    return AdapterFolder(adapters, list(meta['active']),
                         {n: bool(c.get('trainable', True))
                          for n, c in meta['adapters'].items()}, layout='legacy')


def read_adapter_folder(path_dir: str, names: Optional[List[str]] = None) -> AdapterFolder:
    """Read (and check) every adapter of a folder, or only ``names``, changing nothing.

    Accepts our peft layout (with ``mmdeblora_adapters.json``), a folder peft wrote for one
    adapter (read as 'default', or as ``names[0]``), and the older ``adapters.json`` layout.
    """
    if not osp.isdir(path_dir):
        raise FileNotFoundError(f'adapter folder {path_dir!r} does not exist')
    if osp.isfile(osp.join(path_dir, INDEX)):
        index = _read_json(osp.join(path_dir, INDEX),
                           dict(adapters='name -> sub-folder', active='the active adapters'))
        adapters = [_read_peft_adapter(osp.normpath(osp.join(path_dir, rel)), name)
                    for name, rel in index['adapters'].items()
                    if names is None or name in names]
        folder = AdapterFolder(adapters, list(index['active']),
                               {k: bool(v) for k, v in index.get('trainable', {}).items()})
    elif osp.isfile(osp.join(path_dir, PEFT_CONFIG)):
        name = names[0] if names else 'default'
        folder = AdapterFolder([_read_peft_adapter(path_dir, name)], None, {},
                               layout='peft-single')
    elif osp.isfile(osp.join(path_dir, LEGACY_INDEX)):
        folder = _read_legacy(path_dir)
        if names is not None:
            folder.adapters = [a for a in folder.adapters if a.name in names]
    else:
        raise FileNotFoundError(
            f'{path_dir!r} is not an adapter folder: it has neither {INDEX} / {PEFT_CONFIG} '
            f"(peft's format) nor {LEGACY_INDEX} (the older one)")
    found = [a.name for a in folder.adapters]
    if names is not None and (len(names) != len(found) or set(names) - set(found)):
        if folder.layout != 'peft-single':
            raise KeyError(f'{path_dir!r} has no adapter(s) {sorted(set(names) - set(found))}')
    if not folder.adapters:
        raise ValueError(f'{path_dir!r} holds no adapter')
    return folder


def same_config(a: dict, b: dict) -> bool:
    """Whether two adapter configs build the same adapter (dropout aside)."""
    return (int(a['rank']) == int(b['rank'])
            and math.isclose(float(a['alpha']), float(b['alpha']))
            and _targets(a['target_modules']) == _targets(b['target_modules']))


def check_adapter_state(expected: Dict[str, torch.Tensor], given: Dict[str, torch.Tensor],
                        name: str, source: str = 'state dict') -> None:
    """Keys and shapes of ``given`` against adapter ``name``'s tensors ``expected``."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise KeyError(f'{source}: adapter {name!r} state dict mismatch: missing '
                       f'{missing[:5]}, unexpected {unexpected[:5]}')
    wrong = [f'{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}' for k, v in given.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f'{source}: adapter {name!r} shape mismatch (given vs adapter; '
                         f'a different rank?): {wrong[:3]}')


class AdapterIOMixin:
    """``LoRABackbone``'s adapter tensors, folders and checkpoint record, on peft's state
    (the host has ``base``, ``peft_config`` and the adapter methods)."""

    def adapter_state_dict(self, name: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """One adapter's tensors, keys without the adapter name (peft's, portable between
        names); with ``name=None`` every adapter's tensors under their full ``base`` keys."""
        if name is None:
            return {k: v.detach().clone() for k, v in self.base.state_dict().items()
                    if adapter_of_key(k) in self.peft_config}
        self._check_names([name])
        return {k: v.detach().clone()
                for k, v in get_peft_model_state_dict(self.base, adapter_name=name).items()}

    def load_adapter_state_dict(self, state_dict: Dict[str, torch.Tensor], name: str) -> None:
        """Load tensors from ``adapter_state_dict(some_name)`` into adapter ``name``."""
        check_adapter_state(self.adapter_state_dict(name), state_dict, name)
        result = set_peft_model_state_dict(self.base, state_dict, adapter_name=name)
        assert not result.unexpected_keys, result.unexpected_keys

    def save_adapters(self, path_dir: str, names: Optional[Sequence[str]] = None) -> List[str]:
        """Write the adapters (all, or ``names``) to ``path_dir``; the weight files. Base
        parameters trained through ``trainable_extra`` are not adapters, not written."""
        names = self.adapter_names if names is None else list(names)
        trainable = {n: self.is_trainable(n) for n in names}  # unknown names: KeyError
        files = [write_peft_adapter(adapter_subdir(path_dir, n), lora_cfg(self.peft_config[n]),
                                    self.adapter_state_dict(n), n) for n in names]
        write_index(path_dir, names, [a for a in self.active_adapters if a in names],
                    trainable)
        return files

    def load_adapters(self, path_dir: str, names: Optional[Sequence[str]] = None) -> None:
        """Load a folder's adapters (ours, peft's, the older layout), creating those the model
        lacks; all or nothing: every file is read and checked first, and adapters created
        before a failure are removed again."""
        folder = read_adapter_folder(path_dir, list(names) if names else None)
        have = self.adapter_names
        for item in folder.adapters:
            if item.name in have and not same_config(lora_cfg(self.peft_config[item.name]),
                                                     item.cfg):
                raise ValueError(f'{item.source}: adapter {item.name!r} was saved with '
                                 f'{item.cfg}, the model has '
                                 f'{lora_cfg(self.peft_config[item.name])}')
        if folder.active is not None:
            known = set(have) | {a.name for a in folder.adapters}
            if set(folder.active) - known:
                raise KeyError(f'{path_dir}: active adapters {folder.active} include unknown '
                               f'ones; adapters: {sorted(known)}')
        active, created = self.active_adapters, []
        try:
            for item in folder.adapters:
                if item.name not in self.adapter_names:
                    self.add_adapter(item.name, activate=False, **item.cfg)
                    created.append(item.name)
                check_adapter_state(self.adapter_state_dict(item.name), item.tensors,
                                    item.name, item.source)
        except Exception:
            for name in created:
                self.delete_adapter(name)
            self.set_active_adapters(active)
            raise
        for item in folder.adapters:  # every check passed: nothing below can fail
            self.load_adapter_state_dict(item.tensors, item.name)
            trainable = folder.trainable.get(item.name, True)
            (self.unfreeze_adapter if trainable else self.freeze_adapter)(item.name)
        self.set_active_adapters(
            folder.active if folder.active is not None
            else active + [a.name for a in folder.adapters if a.name not in active])

    def get_extra_state(self) -> torch.Tensor:
        """The adapters' record (configs, active set, trainability), so that a checkpoint is
        self-describing: adapters added at run time (the debLoRA hook) are re-created on
        load."""
        names = self.adapter_names
        return encode_meta(dict(
            adapters={n: lora_cfg(self.peft_config[n]) for n in names},
            active=self.active_adapters, trainable={n: self.is_trainable(n) for n in names}))

    def set_extra_state(self, state: torch.Tensor) -> None:
        """Runs before the ``base`` tensors load: adapters the model lacks are created (so
        the checkpoint's tensors load into them), trainability and active set restored."""
        meta = decode_meta(state)
        for name, cfg in meta['adapters'].items():
            if name not in self.adapter_names:
                self.add_adapter(name, activate=False, **cfg)
        for name, trainable in meta['trainable'].items():
            (self.unfreeze_adapter if trainable else self.freeze_adapter)(name)
        self.set_active_adapters(meta['active'])
