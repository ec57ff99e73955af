"""Merge LoRA adapters into the base weights for deployment.

``python tools/merge_lora.py CONFIG CHECKPOINT OUT.pth [--adapters NAME ...]
[--save-adapters DIR] [--cfg-options k=v ...]``

Builds the model of CONFIG, loads CHECKPOINT (``weights_only=True``), merges the active
adapters of every ``LoRABackbone`` (or the ``--adapters`` given) into the wrapped backbone's
weights and writes a plain mmengine checkpoint (``meta`` + ``state_dict``) whose keys are
those of the same model *without* LoRA, plus ``OUT.py``: CONFIG with each LoRABackbone
replaced by the backbone it wraps, so ``tools/test.py OUT.py OUT.pth`` runs the plain model.
``--save-adapters DIR`` also writes the adapters alone (one safetensors file per adapter
and ``adapters.json``, a sub-folder per LoRABackbone) next to the checkpoint.
"""
import argparse
import copy
import os
import os.path as osp
import sys
from typing import Any, List

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402

from mmdeblora.utils.launch import register_all  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Merge LoRA adapters into base weights')
    parser.add_argument('config', help='config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='mmengine checkpoint with LoRA adapters')
    parser.add_argument('out', help='output checkpoint path (.pth); OUT.py gets the config')
    parser.add_argument('--adapters', nargs='+', default=None,
                        help='adapters to merge (default: the active ones)')
    parser.add_argument('--save-adapters', metavar='DIR', default=None,
                        help='also write the adapters alone as safetensors into DIR')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args()


def unwrap_lora_cfg(node: Any) -> Any:
    """The config with every ``LoRABackbone`` dict replaced by the backbone it wraps."""
    if isinstance(node, dict):
        if node.get('type') == 'LoRABackbone':
            return unwrap_lora_cfg(node['backbone'])
        return type(node)({k: unwrap_lora_cfg(v) for k, v in node.items()})
    if isinstance(node, (list, tuple)):
        return type(node)(unwrap_lora_cfg(v) for v in node)
    return node


def drop_lora_pretrained(node: Any) -> None:
    """The checkpoint holds every base weight: skip LoRABackbone's own ``pretrained``."""
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
    """Replace every LoRABackbone in ``model`` by its merged plain backbone, in place."""
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
    register_all()
    from mmrotate.registry import MODELS

    from mmdeblora.models.backbones.lora_backbone import load_weights_file
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    model_cfg = copy.deepcopy(cfg.model)
    drop_lora_pretrained(model_cfg)
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmrotate')):
        model = MODELS.build(model_cfg)
    model.load_state_dict(load_weights_file(args.checkpoint), strict=True)
    model.eval()
    merged = merge_model(model, args.adapters, args.save_adapters)

    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    meta = dict(merged_from=osp.abspath(args.checkpoint), merged=merged,
                config=osp.splitext(args.out)[0] + '.py')
    torch.save(dict(meta=meta, state_dict=model.state_dict()), args.out)
    plain = copy.deepcopy(cfg)
    plain.model = unwrap_lora_cfg(copy.deepcopy(cfg.model))
    plain.dump(meta['config'])
    print_log(f'wrote {args.out} and {meta["config"]}', logger='current')


if __name__ == '__main__':
    main()
