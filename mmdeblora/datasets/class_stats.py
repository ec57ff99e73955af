"""Per-class training instance counts and head / middle / tail groups: the one place.

Counts come from the configured train dataset itself (the real ``CheckedDOTADataset`` /
``DOTADataset`` built from the config), so they follow ``filter_cfg`` (images dropped by
``filter_empty_gt`` are not counted) and the dataset's ``ignore_flag`` (difficult
instances above ``diff_thr`` are not counted: mmdet's ``PackDetInputs`` moves them to
``ignored_instances``, so the detector never trains on them). We count *instances*, not
images containing the class (LVIS-style image counts): for DOTA patches the instance is
the unit a RoI classifier sees.

Consumers (``ReweightLoss``, ``ECMLoss``, ``ResLTBBoxHead``) take ``class_counts='auto'``
and receive the counts from :class:`mmdeblora.engine.hooks.ClassStatsHook`, which calls
:func:`load_or_compute_class_stats` on ``runner.train_dataloader.dataset`` before
training and caches the result as ``class_stats.json`` in the work dir.
"""
import hashlib
import json
import os
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Union

from mmdeblora.utils.atomic import atomic_open
from .class_groups import GroupSpec, group_indices, resolve_groups

STATS_FILE = 'class_stats.json'


@dataclass
class ClassStats:
    """Training instance counts per class (in class order) and the class groups."""

    classes: List[str]
    counts: List[int]
    groups: Dict[str, List[str]]
    num_images: int
    fingerprint: str = ''

    def counts_dict(self) -> Dict[str, int]:
        return dict(zip(self.classes, self.counts))

    def group_indices(self) -> Dict[str, List[int]]:
        """Groups as class indices (what heads need; they do not know class names)."""
        return group_indices(self.groups, self.classes)

    def to_json(self) -> dict:
        out = asdict(self)
        out['counts'] = self.counts_dict()  # readable, and GroupDOTAMetric reads it
        out['group_counts'] = {g: sum(self.counts_dict()[c] for c in names)
                               for g, names in self.groups.items()}
        return out

    @classmethod
    def from_json(cls, data: dict) -> 'ClassStats':
        classes = list(data['classes'])
        counts = data['counts']
        if isinstance(counts, dict):
            counts = [int(counts[c]) for c in classes]
        return cls(classes=classes, counts=[int(n) for n in counts],
                   groups={g: list(v) for g, v in data['groups'].items()},
                   num_images=int(data.get('num_images', 0)),
                   fingerprint=data.get('fingerprint', ''))


def dataset_class_counts(dataset: Any) -> List[int]:
    """Non-ignored instances per class over the dataset's (filtered) data list.

    Works for any mmengine ``BaseDataset`` whose data infos hold ``instances`` with
    ``bbox_label`` and ``ignore_flag`` (DOTA, mmdet detection sets) or one ``gt_label``
    per sample (mmpretrain classification sets: one instance per image), and for dataset
    wrappers exposing ``get_data_info`` (a ``RepeatDataset`` counts each repeat, i.e.
    the distribution of one training epoch).
    """
    if hasattr(dataset, 'full_init'):
        dataset.full_init()  # lazy_init=True datasets have no data list yet
    classes = dataset.metainfo.get('classes')
    if not classes:
        raise ValueError(f'{type(dataset).__name__} has no metainfo["classes"]; cannot '
                         'count instances per class')
    counts = [0] * len(classes)
    for idx in range(len(dataset)):
        for label in sample_labels(dataset, idx):
            if not 0 <= label < len(classes):
                raise ValueError(f'instance label {label} out of range for '
                                 f'{len(classes)} classes (data index {idx})')
            counts[label] += 1
    return counts


def sample_labels(dataset: Any, idx: int) -> List[int]:
    """The labels of sample ``idx``'s non-ignored instances, from its data info (no image
    is loaded): ``instances`` with ``bbox_label`` (detection) or one ``gt_label``
    (classification); works through mmengine's wrappers (``get_data_info``)."""
    info = dataset.get_data_info(idx)
    if 'instances' not in info and 'gt_label' in info:
        instances = [dict(bbox_label=info['gt_label'])]
    else:
        instances = info.get('instances', [])
    return [int(inst['bbox_label']) for inst in instances if not inst.get('ignore_flag', 0)]


def dataset_fingerprint(dataset: Any) -> str:
    """What the counts depend on: class names, annotation source, filters, diff_thr."""
    keys = dict(type=type(dataset).__name__,
                classes=list(dataset.metainfo.get('classes', ())),
                data_root=getattr(dataset, 'data_root', None),
                ann_file=getattr(dataset, 'ann_file', None),
                filter_cfg=getattr(dataset, 'filter_cfg', None),
                diff_thr=getattr(dataset, 'diff_thr', None),
                length=len(dataset),
                inner=[dataset_fingerprint(d) for d in  # wrappers: Repeat, Concat, ...
                       getattr(dataset, 'datasets', [getattr(dataset, 'dataset', None)])
                       if d is not None])
    blob = json.dumps(keys, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def compute_class_stats(dataset: Any, groups: GroupSpec = 'auto',
                        thresholds: Optional[Dict[str, float]] = None) -> ClassStats:
    """Counts and groups of a built dataset (no caching)."""
    counts = dataset_class_counts(dataset)
    classes = list(dataset.metainfo['classes'])
    return ClassStats(classes=classes, counts=counts,
                      groups=resolve_groups(classes, counts, groups, thresholds),
                      num_images=len(dataset), fingerprint=dataset_fingerprint(dataset))


def load_or_compute_class_stats(dataset: Any, work_dir: Optional[str] = None,
                                groups: GroupSpec = 'auto',
                                thresholds: Optional[Dict[str, float]] = None,
                                write: bool = True) -> ClassStats:
    """Stats of ``dataset``, read from ``<work_dir>/class_stats.json`` when it matches.

    ``dataset`` is a built dataset or a dataset config (built through mmrotate's
    registry). The cache is reused only when its fingerprint (classes, data_root,
    ann_file, filter_cfg, diff_thr, length) matches; groups are always re-resolved from
    the cached counts, so changing ``groups`` needs no recount.
    """
    if isinstance(dataset, dict):
        dataset = build_dataset(dataset)
    path = osp.join(work_dir, STATS_FILE) if work_dir else None
    stats = None
    fingerprint = dataset_fingerprint(dataset)
    if path and osp.isfile(path):
        with open(path) as fh:
            cached = ClassStats.from_json(json.load(fh))
        if cached.fingerprint == fingerprint:
            cached.groups = resolve_groups(cached.classes, cached.counts, groups,
                                           thresholds)
            stats = cached
    if stats is None:
        stats = compute_class_stats(dataset, groups, thresholds)
    if path and write:
        os.makedirs(work_dir, exist_ok=True)
        with atomic_open(path) as fh:
            json.dump(stats.to_json(), fh, indent=2)
    return stats


def build_dataset(cfg: dict) -> Any:
    """Build a dataset config through mmrotate's registry (our datasets registered)."""
    from mmengine.registry import init_default_scope
    from mmrotate.registry import DATASETS
    init_default_scope('mmrotate')
    return DATASETS.build(_without_pipelines(cfg))


def _without_pipelines(cfg: Any) -> Any:
    """Counting reads annotations only: drop every (nested) dataset's pipeline, and
    the image check of ``CheckedDOTADataset`` (the training run itself still checks)."""
    if isinstance(cfg, dict):
        out = {k: [] if k == 'pipeline' else _without_pipelines(v)
               for k, v in cfg.items()}
        if str(out.get('type', '')).split('.')[-1] == 'CheckedDOTADataset':
            out['check_images'] = None
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_without_pipelines(v) for v in cfg)
    return cfg


def config_class_stats(config: Union[str, Any], work_dir: Optional[str] = None,
                       groups: GroupSpec = 'auto',
                       thresholds: Optional[Dict[str, float]] = None) -> ClassStats:
    """Stats of a config file's (or Config's) ``train_dataloader.dataset``."""
    from mmengine.config import Config
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg = ds_cfg.to_dict() if hasattr(ds_cfg, 'to_dict') else dict(ds_cfg)
    return load_or_compute_class_stats(ds_cfg, work_dir, groups, thresholds)
