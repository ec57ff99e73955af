"""Refuse a config whose data sets have more classes than a head of its model.

mmdet and mmpretrain take the labels as given: with 20 class names in the data and
``num_classes=15`` in a head, classes 15 and up become the background class (detection) or
index past the logits, and a detector trains to exit code 0 having learnt none of them.
Both numbers are in the config, so the check reads them there, before any data set is
read or model trained.
"""
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.fileio import list_from_file
from mmengine.registry import DATASETS

LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
# parts whose num_classes is not the data set's: the RPN's object / not object, and a
# backbone's own classifier (timm's num_classes=0 switches it off)
NOT_CLASS_HEADS = ('rpn_head', 'backbone', 'neck')


class ClassCountError(ValueError):
    """A data set has more classes than a head of the model."""


def head_class_counts(model: dict, key: str = 'model') -> Iterator[Tuple[str, int]]:
    """``(config key, num_classes)`` of every integer ``num_classes`` in ``model``: heads,
    cascade stages (lists), heads under ``roi_head``, mmpretrain's ``head``, losses and
    data preprocessors that take one; not the RPN head."""
    if isinstance(model, dict):
        for k, v in model.items():
            if k in NOT_CLASS_HEADS:
                continue
            if k == 'num_classes' and isinstance(v, int) and not isinstance(v, bool) \
                    and v > 0:
                yield f'{key}.num_classes', v
            else:
                yield from head_class_counts(v, f'{key}.{k}')
    elif isinstance(model, (list, tuple)):
        for i, v in enumerate(model):
            yield from head_class_counts(v, f'{key}[{i}]')


def _names(classes) -> Optional[Sequence[str]]:
    if isinstance(classes, str):  # a file of names, as mmengine / mmpretrain read it
        try:
            return list_from_file(classes)
        except (OSError, TypeError):
            return None  # building the data set names the missing file
    return list(classes) if classes is not None else None


def dataset_classes(ds: dict, key: str) -> Iterator[Tuple[str, Sequence[str]]]:
    """``(config key, class names)`` of the data set config ``ds`` (unwrapping
    RepeatDataset / ClassBalancedDataset, each of a ConcatDataset's), as the data set will
    resolve them: ``metainfo.classes``, else a ``classes`` argument (mmpretrain,
    ``DOTACropDataset``), else the data set class's ``METAINFO`` (mmrotate's
    ``DOTADataset``: the 15 DOTA-v1.0 classes). Nothing for a data set whose classes come
    from its files (mmpretrain's ``CustomDataset`` without ``classes``)."""
    if not isinstance(ds, dict):
        return
    if isinstance(ds.get('datasets'), (list, tuple)):
        for i, sub in enumerate(ds['datasets']):
            yield from dataset_classes(sub, f'{key}.datasets[{i}]')
        return
    if isinstance(ds.get('dataset'), dict):  # wrappers: RepeatDataset, ClassBalanced...
        yield from dataset_classes(ds['dataset'], f'{key}.dataset')
        return
    meta = ds.get('metainfo') or {}
    if isinstance(meta, dict) and meta.get('classes') is not None:
        names, where = _names(meta['classes']), f'{key}.metainfo.classes'
    elif ds.get('classes') is not None:
        names, where = _names(ds['classes']), f'{key}.classes'
    else:
        ds_type = ds.get('type')
        if isinstance(ds_type, str):
            with DATASETS.switch_scope_and_registry(ds.get('_scope_')) as registry:
                ds_type = registry.get(ds_type)
        default = (getattr(ds_type, 'METAINFO', None) or {}).get('classes')
        name = getattr(ds_type, '__name__', ds.get('type'))
        names, where = _names(default), f"{key} ({name}'s default classes)"
    if names:
        yield where, names


def check_class_counts(cfg: Config) -> None:
    """Raise :class:`ClassCountError` when a data set of ``cfg`` has more class names than
    a head's ``num_classes``, naming both config keys. Run with the config's default scope
    (as the runner is) so that data set types resolve."""
    heads: List[Tuple[str, int]] = list(head_class_counts(cfg.get('model') or {}))
    if not heads:
        return
    for loader in LOADERS:
        loader_cfg = cfg.get(loader)
        if not isinstance(loader_cfg, dict):
            continue
        for where, names in dataset_classes(loader_cfg.get('dataset'), f'{loader}.dataset'):
            small = [(k, n) for k, n in heads if n < len(names)]
            if small:
                keys = ', '.join(f'{k}={n}' for k, n in small)
                fewest = min(n for _, n in small)
                raise ClassCountError(
                    f'{where} has {len(names)} class names, more than the model has: '
                    f'{keys}. Classes {list(names[fewest:])} have no output there (a '
                    f'detector trains them as background); set num_classes={len(names)} '
                    'in every head, or give the data set the classes the model has')
