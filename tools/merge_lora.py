"""Merge LoRA adapters into the base weights for deployment.

``python tools/merge_lora.py CONFIG CHECKPOINT OUT.pth [--adapters NAME ...]
[--save-adapters DIR] [--cfg-options k=v ...]``

Builds the model of CONFIG, loads CHECKPOINT (``weights_only=True``), merges the active
adapters of every ``LoRABackbone`` (or the ``--adapters`` given) into the wrapped backbone's
weights and writes a plain mmengine checkpoint (``meta`` + ``state_dict``) whose keys are
those of the same model *without* LoRA, plus ``OUT.py``: CONFIG with each LoRABackbone
replaced by the backbone it wraps, so ``tools/test.py OUT.py OUT.pth`` runs the plain model.
``--save-adapters DIR`` also writes the adapters alone (``LoRABackbone.save_adapters``, a
sub-folder per LoRABackbone).

A full checkpoint holds every base weight, so the LoRABackbone's ``pretrained`` is not read.
A slim one (``LoRACheckpointHook``: ``meta['omitted_keys']``) leaves the frozen base out: it
is rebuilt from CONFIG's ``pretrained`` (``--cfg-options`` may point elsewhere), loaded as
training loaded it, and its digests are checked against the checkpoint's before merging.

Nothing is overwritten without ``--force``: not CHECKPOINT or CONFIG, not an existing OUT,
OUT.py or adapter folder. OUT must not end in ``.py`` (its config would replace it). Every
file is written to a temporary name first and moved into place (``os.replace``, through
``mmdeblora.utils.atomic``), so an interrupted run leaves the old files, never half-written
ones; outputs get the permissions the umask gives.
"""
import argparse
import copy
import os
import os.path as osp
from typing import Any, Callable, List, Optional

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from mmdeblora.utils import register_all_modules
from mmdeblora.utils.atomic import atomic_path
from mmdeblora.utils.launch import quiet_known_upstream_warnings


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Merge LoRA adapters into base weights')
    parser.add_argument('config', help='config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='mmengine checkpoint with LoRA adapters')
    parser.add_argument('out', help='output checkpoint path (.pth); OUT.py gets the config')
    parser.add_argument('--adapters', nargs='+', default=None,
                        help='adapters to merge (default: the active ones)')
    parser.add_argument('--save-adapters', metavar='DIR', default=None,
                        help='also write the adapters alone as safetensors into DIR')
    parser.add_argument('--force', action='store_true',
                        help='overwrite existing outputs (OUT, OUT.py, the adapter folder), '
                        'even CHECKPOINT or CONFIG themselves')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args()


def config_path(out: str) -> str:
    """Where the plain config of OUT goes: OUT with ``.py`` for its extension."""
    return osp.splitext(out)[0] + '.py'


def check_outputs(config: str, checkpoint: str, out: str, save_adapters: Optional[str],
                  force: bool) -> None:
    """Refuse, before any work, outputs that would destroy a file or each other."""
    def same(a: str, b: str) -> bool:
        return osp.realpath(a) == osp.realpath(b)

    cfg_out = config_path(out)
    if same(out, cfg_out):
        raise ValueError(f'OUT={out!r} ends in .py: the merged config (OUT with .py) would '
                         'overwrite the merged weights; give OUT a .pth name')
    problems = []
    for path, what in ((out, 'OUT'), (cfg_out, 'the merged config OUT.py')):
        if same(path, checkpoint):
            problems.append(f'{what} {path!r} is CHECKPOINT itself')
        elif same(path, config):
            problems.append(f'{what} {path!r} is CONFIG itself')
        elif osp.exists(path):
            problems.append(f'{what} {path!r} exists')
    if save_adapters and osp.exists(save_adapters) and (
            not osp.isdir(save_adapters) or os.listdir(save_adapters)):
        problems.append(f'--save-adapters {save_adapters!r} exists and is not empty')
    if problems and not force:
        raise FileExistsError('refusing to overwrite: ' + '; '.join(problems) +
                              '. Choose other names or pass --force')


def write_atomic(path: str, write: Callable[[str], Any]) -> None:
    """``write(tmp)`` beside ``path`` (same extension: ``Config.dump`` goes by it), then
    move it into place in one step, with the permissions the umask gives (not mkstemp's
    0600); a symlink at ``path`` is replaced, not written through."""
    with atomic_path(path) as tmp:
        write(tmp)


def replace_dir(path: str, fill: Callable[[str], Any]) -> None:
    """``fill(tmp_dir)`` beside ``path``, then swap it in (the old folder goes last); the
    folder gets the umask's permissions (not mkdtemp's 0700)."""
    with atomic_path(path) as tmp:
        os.mkdir(tmp)
        fill(tmp)


def unwrap_lora_cfg(node: Any) -> Any:
    """The config with every ``LoRABackbone`` dict replaced by the backbone it wraps."""
    if isinstance(node, dict):
        if node.get('type') == 'LoRABackbone':
            return unwrap_lora_cfg(node['backbone'])
        return type(node)({k: unwrap_lora_cfg(v) for k, v in node.items()})
    if isinstance(node, (list, tuple)):
        return type(node)(unwrap_lora_cfg(v) for v in node)
    return node


def is_slim(checkpoint: dict) -> bool:
    """A checkpoint that leaves tensors out on purpose (``LoRACheckpointHook``'s slim ones:
    the frozen base, to be rebuilt from the config's weight files)."""
    from mmdeblora.engine.hooks.lora_checkpoint_hook import OMITTED_META
    return bool((checkpoint.get('meta') or {}).get(OMITTED_META))


def drop_lora_pretrained(node: Any) -> None:
    """A full checkpoint holds every base weight: skip LoRABackbone's own ``pretrained``."""
    if isinstance(node, dict):
        if node.get('type') == 'LoRABackbone':
            node['pretrained'] = None
        for v in node.values():
            drop_lora_pretrained(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            drop_lora_pretrained(v)


def merge_model(model: torch.nn.Module, adapters: List[str] = None,
                save_dir: str = None) -> List[str]:
    """Replace every LoRABackbone in ``model`` by its merged plain backbone, in place;
    ``save_dir``: also ``save_adapters`` of each into ``save_dir/<module name>``."""
    from mmdeblora.models.backbones import LoRABackbone
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, LoRABackbone)]
    if not found:
        raise ValueError('the model has no LoRABackbone: nothing to merge')
    merged = []
    for name, lora in found:
        if adapters is not None:
            lora.set_active_adapters(adapters)
        if save_dir:
            lora.save_adapters(osp.join(save_dir, name))
        parent = model.get_submodule(name.rpartition('.')[0]) if '.' in name else model
        setattr(parent, name.rpartition('.')[2], lora.merge_and_unload())
        merged.append(f'{name}: {lora.active_adapters}')
        print_log(f'merged adapters {lora.active_adapters} of {name}', logger='current')
    return merged


def main() -> None:
    args = parse_args()
    quiet_known_upstream_warnings()
    register_all_modules()
    from mmrotate.registry import MODELS

    from mmdeblora.utils.checkpoint import load_checkpoint_file
    check_outputs(args.config, args.checkpoint, args.out, args.save_adapters, args.force)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    ckpt = load_checkpoint_file(args.checkpoint)
    if not isinstance(ckpt, dict):
        raise TypeError(f'{args.checkpoint!r} holds a {type(ckpt).__name__}, not a checkpoint')
    state = ckpt['state_dict'] if isinstance(ckpt.get('state_dict'), dict) else ckpt
    model_cfg = copy.deepcopy(cfg.model)
    slim = is_slim(ckpt)
    if not slim:
        drop_lora_pretrained(model_cfg)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmrotate')):
        try:
            model = MODELS.build(model_cfg)
        except FileNotFoundError as err:
            if not slim:
                raise
            from mmdeblora.engine.hooks.lora_checkpoint_hook import SLIM_META
            sources = {k: v.get('sources') for k, v in
                       (ckpt['meta'].get(SLIM_META) or {}).items()}
            raise FileNotFoundError(
                f'{args.checkpoint} is a slim checkpoint: its frozen base is rebuilt from the '
                f'weight files it was trained with ({sources or "see its meta"}), and {err}. '
                'Point CONFIG at them (e.g. --cfg-options model.backbone.pretrained=PATH)'
                ) from None
    model.load_state_dict(state, strict=True)  # a slim one: rebuilt base filled, checked
    if slim:
        print_log(f'{args.checkpoint}: slim checkpoint, frozen base rebuilt from the config\'s '
                  'weight files (digests checked)', logger='current')
    model.eval()
    merged: List[str] = []
    if args.save_adapters:
        replace_dir(args.save_adapters,
                    lambda tmp: merged.extend(merge_model(model, args.adapters, tmp)))
    else:
        merged = merge_model(model, args.adapters)

    meta = dict(merged_from=osp.abspath(args.checkpoint), merged=merged,
                config=config_path(args.out))
    write_atomic(args.out, lambda tmp: torch.save(
        dict(meta=meta, state_dict=model.state_dict()), tmp))
    plain = copy.deepcopy(cfg)
    plain.model = unwrap_lora_cfg(copy.deepcopy(cfg.model))
    write_atomic(meta['config'], lambda tmp: plain.dump(tmp))
    print_log(f'wrote {args.out} and {meta["config"]}', logger='current')


if __name__ == '__main__':
    main()
