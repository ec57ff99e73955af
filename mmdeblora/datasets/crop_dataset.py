"""Object crops of any split-DOTA folder as an mmpretrain classification data set."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.logging import print_log
from mmpretrain.datasets import BaseDataset
from mmpretrain.registry import DATASETS

from .class_groups import DOTA_CLASSES, GroupSpec, check_group_spec, resolve_groups
from .crop_cache import crop_settings, load_crops, load_or_build, read_index
from .crop_split import source_image, stratified_group_split

SPLITS = ('train', 'val', 'test')


@DATASETS.register_module()
class DOTACropDataset(BaseDataset):
    """Every ground-truth box of split-DOTA folders as an upright, resized crop.

    The protocol of the seed paper's classification tables: each rotated box is cut out in
    its own frame with a context margin and resized (``crop_geometry``); crops are cached
    on disk by fingerprint (``crop_cache``). Splits never reuse test data for validation:
    the DOTA train folder gives ``train`` and ``val`` (a seeded split, stratified by class,
    that keeps original images whole) and the DOTA val folder gives ``test``, as in the
    official protocol; a separate validation folder can be named instead (the bias
    benchmark has a balanced one).

    Args:
        data_root: folder holding the split-DOTA folders.
        split: ``'train'``, ``'val'`` or ``'test'``.
        folders: ``{'train': ..., 'test': ..., 'val': ...}`` sub-folders of ``data_root``,
            each with ``images/`` and ``annfiles/``. Without ``'val'``, validation is
            ``val_fraction`` of ``'train'``.
        val_fraction / split_seed: the validation share and the seed of the split.
        classes: class names (default: the 15 DOTA-v1.0 classes).
        groups / group_thresholds: head / middle / tail through
            ``class_groups.resolve_groups`` (``'dota'``, ``'auto'`` from the training
            split's counts, or a dict); stored in ``metainfo['groups']``.
        crop_size / context / keep_ratio / border: see ``crop_geometry.crop_box``.
        min_size: boxes whose shorter side is below this (source pixels) are dropped.
        keep_difficult: keep boxes marked difficult (difficulty > 0).
        cache_dir: where crop cache entries live (relative to the working directory).
        img_suffix: image file extension in ``images/``.
    """
    METAINFO = dict(classes=DOTA_CLASSES)  # the default of ``classes``, readable from a config

    def __init__(self,
                 data_root: str,
                 split: str = 'train',
                 folders: Optional[Dict[str, str]] = None,
                 val_fraction: float = 0.1,
                 split_seed: int = 0,
                 classes: Optional[Sequence[str]] = None,
                 groups: GroupSpec = 'dota',
                 group_thresholds: Optional[Dict[str, float]] = None,
                 crop_size=32,
                 context: float = 0.25,
                 keep_ratio: bool = False,
                 border: str = 'replicate',
                 min_size: float = 2.0,
                 keep_difficult: bool = False,
                 cache_dir: str = 'data/crop_cache',
                 img_suffix: str = 'png',
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        folders = dict(folders or dict(train='train', test='val'))
        unknown = set(folders) - set(SPLITS)
        if unknown or not {'train', 'test'} <= set(folders):
            raise ValueError(f"folders needs 'train' and 'test' (and optionally 'val'), "
                             f'got {sorted(folders)}')
        check_group_spec(groups)
        self.split, self.folders = split, folders
        self.val_fraction, self.split_seed = val_fraction, split_seed
        self.groups_cfg, self.group_thresholds = groups, group_thresholds
        self.settings = crop_settings(crop_size, context, keep_ratio, border)
        self.min_size, self.keep_difficult = float(min_size), keep_difficult
        self.cache_dir, self.img_suffix = cache_dir, img_suffix
        self._entries: List[str] = []
        self._arrays: Dict[int, np.ndarray] = {}
        metainfo = dict(metainfo or {})
        metainfo.setdefault('classes', tuple(classes or DOTA_CLASSES))
        super().__init__(ann_file='', metainfo=metainfo, data_root=data_root, **kwargs)

    # ------------------------------------------------------------------ loading
    def _folder(self, split: str) -> str:
        paths = {k: osp.realpath(osp.join(self.data_root, v)) for k, v in self.folders.items()}
        for other in ('train', 'val'):
            if other in paths and paths[other] == paths['test']:
                raise ValueError(f"folders.{other} and folders.test are the same folder "
                                 f"({paths['test']}): test data is never used for "
                                 'training or validation')
        return paths[split]

    def _entry_id(self, folder: str) -> int:
        entry = load_or_build(folder, self.metainfo['classes'], self.settings, self.cache_dir,
                              self.img_suffix, log=lambda m: print_log(m, logger='current'))
        if entry not in self._entries:
            self._entries.append(entry)
        return self._entries.index(entry)

    def _items(self, split: str) -> List[dict]:
        """The crops of ``split``, split and filtered, as data infos."""
        use_val_folder = 'val' in self.folders
        folder = self._folder('train' if split == 'val' and not use_val_folder else split)
        entry_id = self._entry_id(folder)
        index = read_index(self._entries[entry_id])
        rec = index['records']
        classes = list(self.metainfo['classes'])
        labels = np.array([classes.index(c) for c in rec['label']], dtype=np.int64)
        keep = np.ones(len(labels), dtype=bool)
        if split in ('train', 'val') and not use_val_folder and len(labels):
            img_groups = [source_image(index['images'][i]) for i in rec['image']]
            in_val = stratified_group_split(labels, img_groups, self.val_fraction,
                                            self.split_seed)
            if split == 'val' and not in_val.any():
                raise ValueError(
                    f'val_fraction={self.val_fraction} (split_seed={self.split_seed}) puts '
                    f'none of the {len(set(img_groups))} source images of {folder!r} into '
                    "validation: an image is moved only while a class's validation count is "
                    'below round(its crops * val_fraction) and every class keeps a training '
                    'image; raise val_fraction, add images, or name a validation folder '
                    "with folders['val']")
            keep = in_val if split == 'val' else ~in_val
        if not self.keep_difficult:
            keep &= ~np.array(rec['difficult'], dtype=bool)
        keep &= np.minimum(rec['box_w'], rec['box_h']) >= self.min_size
        return [dict(gt_label=int(labels[i]), crop_index=int(i), cache_id=entry_id,
                     img_id=index['images'][rec['image'][i]], line=rec['line'][i])
                for i in np.flatnonzero(keep)]

    def load_data_list(self) -> List[dict]:
        items = self._items(self.split)
        classes = list(self.metainfo['classes'])
        counts = np.bincount([d['gt_label'] for d in items], minlength=len(classes))
        train_counts = counts if self.split == 'train' else None
        if self.groups_cfg == 'auto' and train_counts is None:
            train_counts = np.bincount([d['gt_label'] for d in self._items('train')],
                                       minlength=len(classes))
        self._metainfo['counts'] = [int(n) for n in counts]
        if train_counts is not None:
            self._metainfo['train_counts'] = [int(n) for n in train_counts]
        self._metainfo['groups'] = resolve_groups(
            classes, None if train_counts is None else [int(n) for n in train_counts],
            self.groups_cfg, self.group_thresholds)
        if not items:
            raise ValueError(f'split {self.split!r} of {self.data_root!r} has no crop left '
                             f'after filtering (min_size={self.min_size}, keep_difficult='
                             f'{self.keep_difficult})')
        return items

    # ------------------------------------------------------------------ items
    def _crops(self, entry_id: int) -> np.ndarray:
        if entry_id not in self._arrays:  # opened lazily, once per worker process
            self._arrays[entry_id] = load_crops(self._entries[entry_id])
        return self._arrays[entry_id]

    def prepare_data(self, idx: int):
        info = self.get_data_info(idx)
        img = np.array(self._crops(info['cache_id'])[info['crop_index']])
        info.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return self.pipeline(info)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state['_arrays'] = {}
        return state

    def extra_repr(self) -> List[str]:
        return [f'Split: \t{self.split}', f'Folders: \t{self.folders}',
                f'Crop settings: \t{self.settings}']
