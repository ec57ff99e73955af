"""Slim checkpoints of a ``LoRABackbone``: its frozen base left out, rebuilt and checked on load.

A LoRABackbone built from weight files (its ``pretrained``, the wrapped backbone's own
``pretrained`` or ``init_cfg``) records them in ``weight_sources``. ``make_slim`` leaves out
of a state dict the base tensors that are still the ones those files gave (``base_snapshot``
taken right after building) and writes their digests into the backbone's ``_extra_state``;
``fill_slim_state_dict`` (run by ``LoRABackbone._load_from_state_dict``, so by every loader)
puts the rebuilt tensors back after checking the digests. ``LoRACheckpointHook``
(``mmdeblora/engine/hooks/lora_checkpoint_hook.py``) drives this during training.
"""
import hashlib
from typing import Dict, Iterator, List

import torch

from .adapter_io import adapter_of_key, decode_meta, encode_meta


def weight_sources(backbone: dict) -> List[tuple]:
    """The wrapped backbone config's own weight files (e.g. SDBackbone's ``pretrained``
    folder, an ``init_cfg`` of type Pretrained), each as ``(source, None)``: it rebuilds
    every tensor from them."""
    sources = []
    if isinstance(backbone.get('pretrained'), str) and backbone['pretrained']:
        sources.append((f'backbone.pretrained={backbone["pretrained"]}', None))
    init = backbone.get('init_cfg')
    for item in init if isinstance(init, (list, tuple)) else [init]:
        if isinstance(item, dict) and item.get('type') == 'Pretrained' and item.get('checkpoint'):
            sources.append((f'backbone.init_cfg.checkpoint={item["checkpoint"]}', None))
    return sources


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


def rebuild_sources(lora) -> List[str]:
    """The weight files ``lora``'s frozen base is rebuilt from when it is built from its
    config (``[]``: a random-init base, which a slim checkpoint cannot leave out)."""
    return [src for src, _ in lora.weight_sources]


def rebuildable(lora) -> Iterator[tuple]:
    """``(key, tensor)`` of the base tensors the config rebuilds from files (keys relative
    to ``lora``); adapters never, random-init tensors never."""
    if not lora.weight_sources:
        return
    from_files = None if any(keys is None for _, keys in lora.weight_sources) else \
        set().union(*(keys for _, keys in lora.weight_sources))
    for key, value in lora.base.state_dict().items():
        if adapter_of_key(key) is not None:
            continue  # an adapter tensor: always kept
        if from_files is not None and key.replace('.base_layer.', '.') not in from_files:
            continue  # left as initialised when `pretrained` was loaded
        yield f'base.{key}', value


def base_snapshot(lora) -> Dict[str, tuple]:
    """The rebuildable base tensors as they are now (call it right after building):
    ``{key: (digest, checksum, version, data pointer)}``, the reference of ``make_slim``.
    One hashing pass (SD v1.5: about 4 s on one core)."""
    return {k: (tensor_digest(v), _checksum(v), v._version, v.data_ptr())
            for k, v in rebuildable(lora)}


def make_slim(lora, state_dict: Dict[str, torch.Tensor], prefix: str,
              reference: Dict[str, tuple]) -> List[str]:
    """Leave out of ``state_dict`` (``lora``'s tensors are under ``prefix``) the base tensors
    that are still the ones in ``reference`` (``base_snapshot`` taken when the model was
    built from its files); returns the keys left out.

    Their digests go into ``lora``'s ``_extra_state``, so whatever loads the checkpoint
    (runner, ``load_state_dict``, tools) puts the rebuilt tensors in their place only after
    checking they are the ones trained with (``fill_slim_state_dict``). Tensors that changed
    since (trained norms, running statistics, a base loaded from a full checkpoint) stay.
    "Still the same": an equal checksum and, unless torch's in-place version counter and
    storage are unchanged, an equal digest (frozen tensors are not hashed at every save).
    """
    extra = prefix + '_extra_state'
    if extra not in state_dict:
        raise KeyError(f'{extra!r} is not in the state dict: not this module\'s')
    left = {}
    for key, value in rebuildable(lora):
        ref = reference.get(key)
        if ref is None or prefix + key not in state_dict or _checksum(value) != ref[1]:
            continue
        if (value._version, value.data_ptr()) == ref[2:] or tensor_digest(value) == ref[0]:
            left[key] = ref[0]
    for key in left:
        del state_dict[prefix + key]
    meta = decode_meta(state_dict[extra])
    meta['slim'] = dict(sources=rebuild_sources(lora), tensors=left)
    state_dict[extra] = encode_meta(meta)
    return [prefix + k for k in left]


def fill_slim_state_dict(lora, state_dict: Dict[str, torch.Tensor], prefix: str) -> int:
    """Complete a slim checkpoint's ``state_dict`` with ``lora``'s rebuilt base, in place;
    returns how many tensors were filled in (0 for a full checkpoint).

    Refuses (RuntimeError) when a rebuilt tensor is not the one the checkpoint was trained
    with (another ``pretrained``, a random-init base): never loads wrong weights.
    """
    extra = state_dict.get(prefix + '_extra_state')
    slim = decode_meta(extra).get('slim') if extra is not None else None
    todo = {k: d for k, d in (slim or {}).get('tensors', {}).items()
            if prefix + k not in state_dict}
    if not todo:
        return 0
    own = {f'base.{k}': v for k, v in lora.base.state_dict().items()}
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
