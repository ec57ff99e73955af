"""Check a config's local inputs before any model or data loader is built.

Nothing here can be downloaded (no model hub, no dataset host), so a missing data folder
or weight file should stop a run at once with a message that names the config key to set,
not minutes later inside a worker process.
"""
import os.path as osp
from typing import Iterator, List, Tuple

from mmengine.config import Config

URL_PREFIXES = ('http://', 'https://', 'torchvision://', 'open-mmlab://', 'mmcls://',
                'mmpretrain://', 'modelzoo://')


def _dataset_paths(cfg: Config, loader: str) -> Iterator[Tuple[str, str]]:
    ds = cfg.get(loader, {}).get('dataset') if cfg.get(loader) else None
    stack = [(f'{loader}.dataset', ds)]
    while stack:
        key, d = stack.pop()
        if not isinstance(d, dict):
            continue
        if 'dataset' in d:  # wrappers: RepeatDataset, ClassBalancedDataset, ...
            stack.append((f'{key}.dataset', d['dataset']))
        for i, sub in enumerate(d.get('datasets', []) or []):
            stack.append((f'{key}.datasets.{i}', sub))
        root = d.get('data_root') or ''
        if d.get('ann_file'):
            yield f'{key}.data_root / ann_file', osp.join(root, d['ann_file'])
        img = (d.get('data_prefix') or {}).get('img_path')
        if img:
            yield f'{key}.data_root / data_prefix.img_path', osp.join(root, img)
        folders = d.get('folders')
        if isinstance(folders, dict) and folders:  # DOTACropDataset: DOTA-format folders
            split = d.get('split', 'train')
            name = folders.get(split) or folders.get('train')  # no 'val': part of train
            if name:
                for sub in ('annfiles', 'images'):
                    yield (f'{key}.data_root / folders.{split}',
                           osp.join(root, name, sub))


def _weight_paths(node, key: str = 'model') -> Iterator[Tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            sub = f'{key}.{k}'
            if k in ('pretrained', 'checkpoint', 'pretrained_model_name_or_path') and \
                    isinstance(v, str) and v:
                yield sub, v
            else:
                yield from _weight_paths(v, sub)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _weight_paths(v, f'{key}.{i}')


def missing_inputs(cfg: Config, mode: str = 'train') -> List[str]:
    """Human-readable lines, one per missing local input the run would need."""
    loaders = ['train_dataloader', 'val_dataloader'] if mode == 'train' \
        else ['test_dataloader']
    problems = []
    for loader in loaders:
        for key, path in _dataset_paths(cfg, loader):
            if not osp.exists(path):
                problems.append(f'data: {path!r} does not exist (set {key})')
    for key, path in _weight_paths(cfg.get('model', {})):
        if path.startswith(URL_PREFIXES):
            problems.append(f'weights: {key}={path!r} is a download link, and nothing can '
                            'be downloaded here; point it at a local file or folder')
        elif not osp.exists(path):
            problems.append(f'weights: {key}={path!r} does not exist')
    for key in ('load_from',):
        path = cfg.get(key)
        if mode == 'train' and path and not osp.exists(path):
            problems.append(f'checkpoint: {key}={path!r} does not exist')
    return problems


def check_inputs(cfg: Config, mode: str = 'train') -> None:
    """Raise FileNotFoundError listing every missing input, with how to fix it."""
    problems = missing_inputs(cfg, mode)
    if problems:
        hint = cfg.get('preflight_hint', '')
        raise FileNotFoundError(
            'this config needs local inputs that are missing:\n  - ' +
            '\n  - '.join(problems) +
            '\nPoint the config at local copies, e.g. `--cfg-options '
            'train_dataloader.dataset.data_root=/path/to/split_dota/`' +
            (f'\n{hint}' if hint else ''))
