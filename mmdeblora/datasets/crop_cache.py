"""Crops of every annotated box of a split-DOTA folder, cached on disk by fingerprint.

Why a cache: cutting and resizing every object is the slow part of a crop data set (real
DOTA holds hundreds of thousands of boxes), and many runs read the same crops. One cache
entry is a folder ``<cache_dir>/<folder name>-<fingerprint>/`` with ``crops.npy`` (uint8
``N x H x W x 3``, BGR as OpenCV reads, memory-mapped on read) and ``index.json`` (per
crop: class, source file and line, box size, difficulty). The fingerprint covers the
annotation files' contents, every image's name, size and modification time, the class
list and the crop settings, so an edited source or other settings give a new entry.

Entries are written to a temporary folder and renamed into place, so a reader never sees
half an entry and two writers cannot mix their files; an existing entry is never
overwritten (the one already there wins). An entry is checked when it is opened (the index
parses and is consistent, the ``.npy`` header's shape matches it and the file is as long as
that shape needs), so a cut or replaced file is an error naming the entry, not a mmap or
JSON error or an ``IndexError`` when a missing crop is drawn. Filtering (difficult, tiny
boxes) happens when a data set reads an entry, so one entry serves every filter setting.
"""
import hashlib
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Callable, Dict, List, Optional, Sequence

import cv2
import numpy as np

from mmdeblora.utils.atomic import apply_umask
from .checked_dota import CheckedDOTADataset
from .crop_geometry import Size, _size, crop_box, quad_to_frame

CACHE_VERSION = 1
CROPS_FILE, INDEX_FILE = 'crops.npy', 'index.json'
LogFn = Optional[Callable[[str], None]]
RECORD_KEYS = ('label', 'image', 'line', 'difficult', 'box_w', 'box_h', 'outside')


class CropCacheDamaged(RuntimeError):
    """A crop cache entry whose files are cut, replaced or inconsistent."""

    def __init__(self, entry: str, problem: str) -> None:
        super().__init__(f'crop cache {entry!r} is damaged: remove it (the next run rebuilds '
                         f'it): {problem}')


def read_dota_folder(folder: str, classes: Sequence[str],
                     img_suffix: str = 'png') -> List[dict]:
    """Images and instances of one split-DOTA folder (``images/``, ``annfiles/``).

    Parsing and its checks are ``CheckedDOTADataset``'s (a bad line is an error naming the
    file and line); ``ignore_flag`` marks difficult boxes (difficulty > 0).
    """
    ann_dir, img_dir = osp.join(folder, 'annfiles'), osp.join(folder, 'images')
    if not osp.isdir(ann_dir):
        raise FileNotFoundError(
            f'{ann_dir!r} does not exist: a crop data set reads split-DOTA folders '
            '(images/ and annfiles/); generate the bias benchmark with '
            '`.venv/bin/python tools/data/make_bias_benchmark.py` or the toy DOTA with '
            '`tools/data/make_toy_dota.py`, or point data_root at split DOTA (docs/data.md)')
    dota = CheckedDOTADataset(ann_file=ann_dir, data_prefix=dict(img_path=img_dir),
                              metainfo=dict(classes=tuple(classes)), diff_thr=0,
                              img_suffix=img_suffix, pipeline=[], lazy_init=True)
    data_list = sorted(dota.load_data_list(), key=lambda info: info['img_id'])
    for info in data_list:
        if info['instances'] and not osp.isfile(info['img_path']):
            raise FileNotFoundError(
                f"{osp.join(ann_dir, info['img_id'] + '.txt')}: its image "
                f"{info['img_path']!r} does not exist (img_suffix={img_suffix!r})")
    return data_list


def crop_settings(size: Size, context: float, keep_ratio: bool, border: str) -> dict:
    """The settings that change the pixels of a crop (and so the fingerprint)."""
    w, h = _size(size)
    return dict(size=[w, h], context=float(context), keep_ratio=bool(keep_ratio),
                border=border)


def fingerprint(folder: str, data_list: List[dict], classes: Sequence[str],
                settings: dict) -> str:
    """sha256 over the annotations' contents, the images' names, sizes and modification
    times, the classes and the crop settings."""
    h = hashlib.sha256(json.dumps(dict(version=CACHE_VERSION, classes=list(classes),
                                       settings=settings), sort_keys=True).encode())
    ann_dir = osp.join(folder, 'annfiles')
    for info in data_list:
        with open(osp.join(ann_dir, info['img_id'] + '.txt'), 'rb') as fh:
            h.update(info['img_id'].encode() + b'\0' + hashlib.sha1(fh.read()).digest())
        if osp.isfile(info['img_path']):
            st = os.stat(info['img_path'])
            h.update(f"{info['file_name']}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def _write_entry(path: str, folder: str, data_list: List[dict], classes: Sequence[str],
                 settings: dict, fp: str, log: LogFn) -> None:
    n = sum(len(info['instances']) for info in data_list)
    w, h = settings['size']
    crops = np.lib.format.open_memmap(osp.join(path, CROPS_FILE), mode='w+', dtype=np.uint8,
                                      shape=(n, h, w, 3))
    images, rec = [], dict(label=[], image=[], line=[], difficult=[], box_w=[], box_h=[],
                           outside=[])
    i = 0
    for k, info in enumerate(data_list):
        if not info['instances']:
            continue
        img = cv2.imread(info['img_path'], cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {info['img_path']!r}")
        images.append(info['img_id'])
        ih, iw = img.shape[:2]
        for line, inst in enumerate(info['instances'], 1):
            frame = quad_to_frame(inst['bbox'])
            if frame.w > 0 and frame.h > 0:
                crops[i] = crop_box(img, frame, (w, h), settings['context'],
                                    settings['keep_ratio'], settings['border'])
            rec['label'].append(classes[inst['bbox_label']])
            rec['image'].append(len(images) - 1)
            rec['line'].append(line)
            rec['difficult'].append(bool(inst['ignore_flag']))
            rec['box_w'].append(round(frame.w, 2))
            rec['box_h'].append(round(frame.h, 2))
            rec['outside'].append(not (0 <= frame.cx < iw and 0 <= frame.cy < ih))
            i += 1
        if log and (k + 1) % 500 == 0:
            log(f'crops of {folder}: {k + 1}/{len(data_list)} images')
    crops.flush()
    del crops
    index = dict(version=CACHE_VERSION, fingerprint=fp, folder=osp.abspath(folder),
                 classes=list(classes), settings=settings, num_crops=n, images=images,
                 records=rec)
    with open(osp.join(path, INDEX_FILE), 'w') as fh:
        json.dump(index, fh)


def load_or_build(folder: str, classes: Sequence[str], settings: dict, cache_dir: str,
                  img_suffix: str = 'png', log: LogFn = None) -> str:
    """The cache entry (a folder) for ``folder`` under ``settings``; built if missing."""
    data_list = read_dota_folder(folder, classes, img_suffix)
    fp = fingerprint(folder, data_list, classes, settings)
    name = osp.basename(osp.normpath(osp.abspath(folder))) or 'root'
    entry = osp.join(cache_dir, f'{name}-{fp[:16]}')
    if osp.isdir(entry):
        check_entry(entry, fp)
        return entry
    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{name}-{fp[:16]}.tmp-', dir=cache_dir)
    try:
        apply_umask(tmp)  # mkdtemp makes it 0700; an entry is as shareable as a mkdir's
        if log:
            log(f'writing crops of {folder} to {entry}')
        _write_entry(tmp, folder, data_list, classes, settings, fp, log)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not osp.isdir(entry):  # not a lost race: a real error
                raise
    finally:
        if osp.isdir(tmp):
            shutil.rmtree(tmp)
    check_entry(entry, fp)
    return entry


def read_index(entry: str) -> dict:
    """The index of an entry, checked for consistency (``CropCacheDamaged`` if not)."""
    path = osp.join(entry, INDEX_FILE)
    try:
        with open(path, encoding='utf-8') as fh:
            index = json.load(fh)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CropCacheDamaged(entry, f'{INDEX_FILE} is not valid JSON ({e})') from e
    _check_index(entry, index)
    return index


def _check_index(entry: str, index) -> None:
    def bad(problem: str):
        raise CropCacheDamaged(entry, f'{INDEX_FILE} {problem}')

    if not isinstance(index, dict):
        bad(f'holds a {type(index).__name__}, not an object')
    missing = [k for k in ('fingerprint', 'classes', 'settings', 'num_crops', 'images',
                           'records') if k not in index]
    if missing:
        bad(f'lacks {missing}')
    n, rec, images = index['num_crops'], index['records'], index['images']
    if not isinstance(n, int) or n < 0:
        bad(f'has num_crops={n!r}')
    if not isinstance(rec, dict) or not isinstance(images, list):
        bad('has records / images of the wrong type')
    for key in RECORD_KEYS:
        if not isinstance(rec.get(key), list) or len(rec[key]) != n:
            got = len(rec[key]) if isinstance(rec.get(key), list) else 'no'
            bad(f'has {got} records.{key} for num_crops={n}')
    if rec['image'] and not (0 <= min(rec['image']) and max(rec['image']) < len(images)):
        bad(f'records.image points outside its {len(images)} images')
    unknown = set(rec['label']) - set(index['classes'])
    if unknown:
        bad(f'has labels {sorted(map(str, unknown))} that are not in its classes')


def _check_crops(entry: str, index: dict) -> None:
    """The ``.npy`` header against the index, and the file size against the header.

    Reads the header only: the crops stay on disk.
    """
    path = osp.join(entry, CROPS_FILE)
    w, h = index['settings']['size']
    want = (index['num_crops'], h, w, 3)
    try:
        with open(path, 'rb') as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                           np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(fh)
            offset = fh.tell()
    except (ValueError, OSError, SyntaxError) as e:
        raise CropCacheDamaged(entry, f'{CROPS_FILE} is not a .npy file ({e})') from e
    if tuple(shape) != want or dtype != np.uint8:
        raise CropCacheDamaged(entry, f'{CROPS_FILE} holds {dtype} {tuple(shape)}, '
                               f'{INDEX_FILE} says uint8 {want}')
    size, need = os.path.getsize(path), offset + int(np.prod(shape)) * dtype.itemsize
    if size != need:
        raise CropCacheDamaged(entry, f'{CROPS_FILE} is {size} bytes, its header needs '
                               f'{need} ({"cut short" if size < need else "extra data"})')


def check_entry(entry: str, fp: str) -> None:
    """Raise (never repair) when a folder under the expected name is not that entry."""
    if not (osp.isfile(osp.join(entry, INDEX_FILE)) and
            osp.isfile(osp.join(entry, CROPS_FILE))):
        raise RuntimeError(f'crop cache {entry!r} is incomplete (no {INDEX_FILE} or '
                           f'{CROPS_FILE}); it is not ours to delete: remove it by hand '
                           'or set cache_dir elsewhere')
    index = read_index(entry)
    got = index.get('fingerprint')
    if got != fp:
        raise RuntimeError(f'crop cache {entry!r} holds fingerprint {got!r}, expected {fp!r}; '
                           'not overwriting it: remove it by hand or set cache_dir elsewhere')
    _check_crops(entry, index)


def load_crops(entry: str) -> np.ndarray:
    """The crops of an entry, memory-mapped read-only."""
    try:
        return np.load(osp.join(entry, CROPS_FILE), mmap_mode='r')
    except (ValueError, OSError) as e:  # changed since check_entry (e.g. in a worker)
        raise CropCacheDamaged(entry, f'{CROPS_FILE} cannot be mapped ({e})') from e


def class_counts(labels: Sequence[str], classes: Sequence[str]) -> Dict[str, int]:
    out = {c: 0 for c in classes}
    for name in labels:
        out[name] += 1
    return out
