"""Write the bias benchmark: the source domain and a long-tailed aerial target domain.

Layout under ``out_dir``::

    source/{train,val}/<class>/<n>.png        balanced, for the foundation (CustomDataset)
    target/train/{images,annfiles}            long-tailed (DOTA format, 15 classes)
    target/train_balanced/{images,annfiles}   the oracle: as many boxes, class-balanced
    target/val/{images,annfiles}              balanced validation (operating-point checks)
    target/test/{images,annfiles}             balanced test
    source.json, target.json                  settings, counts and fingerprints

Every part draws from its own random stream (seed, part), so changing the size of one
part leaves the others as they were, and the source does not depend on the bias setting
(one foundation serves every setting of the dial).
"""
import hashlib
import json
import math
import os
import os.path as osp
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..aerial_scenes import Box, Ground, SceneStyle, write_scenes
from ..class_groups import DOTA_CLASSES, DOTA_GROUPS
from ..toy_dota import long_tail_counts
from .draw import Frame
from .looks import Look
from .source import SOURCE_CLASSES, source_classes, write_source
from .target import CUE_DEFAULTS, SIBLINGS, TargetStyle

GENERATOR_VERSION = 1
CLASS_ORDER = tuple(DOTA_GROUPS['head'] + DOTA_GROUPS['middle'] + DOTA_GROUPS['tail'])
PARTS = ('source/train', 'source/val', 'target/train', 'target/train_balanced',
         'target/val', 'target/test')
LogFn = Optional[Callable[[str], None]]

SOURCE_DEFAULTS = dict(seed=0, per_class=300, val_per_class=50, img_size=32)
TARGET_DEFAULTS = dict(seed=0, bias='strong', cue_strength=0.05, stripe_period=4.0,
                       max_count=1000, imbalance_ratio=100.0, profile='exp',
                       val_per_class=40, test_per_class=100, img_size=128,
                       object_size=[20.0, 30.0], objects_per_image=6.0, noise=8.0)


def part_rng(seed: int, part: str) -> np.random.RandomState:
    """An independent random stream for one part of the benchmark."""
    key = int.from_bytes(hashlib.sha256(f'{seed}/{part}'.encode()).digest()[:4], 'little')
    return np.random.RandomState(key)


def content_fingerprint(path: str) -> str:
    """sha256 (16 hex digits) of what the generator wrote under ``path``: every file's
    relative path and bytes, in sorted order, the ``*.json`` summaries left out. The
    settings fingerprint says what was asked; this one says what was drawn, so that a
    silent change of the pixels or the boxes (a new library version, a changed drawing
    routine) shows in every table made on the data."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            if name.endswith('.json'):
                continue
            full = osp.join(root, name)
            digest.update(osp.relpath(full, path).encode() + b'\0')
            with open(full, 'rb') as fh:
                digest.update(hashlib.sha256(fh.read()).digest())
    return digest.hexdigest()[:16]


def settings_fingerprint(kind: str, settings: dict) -> str:
    blob = json.dumps(dict(kind=kind, version=GENERATOR_VERSION, settings=settings),
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------- target scenes
# Aerial ground: low-frequency terrain colour, grain and a few roads.
_TERRAIN = Ground(palette=[(105, 135, 115), (90, 110, 100), (125, 135, 145), (85, 120, 110)],
                  relief=16, cells=5, grain=6, road_width=(3, 6), road_jitter=(0.1, 8))


class _TargetScenes(SceneStyle):
    """``TargetStyle``'s drawing on boxes of ``object_size`` (scaled by the instance's
    ``Look`` where the setting draws one), under sensor noise."""
    ground, tries, spacing = _TERRAIN, 50, (1, 2)

    def __init__(self, style: TargetStyle, object_size: Tuple[float, float], noise: float,
                 typical: bool):
        self.style, self.object_size, self.noise = style, object_size, noise
        self.typical = typical

    def prepare(self, name: str, rng: np.random.RandomState) -> Optional[Look]:
        return self.style.look(name, rng, self.typical)  # None (no draw): older settings

    def size(self, name: str, look: Optional[Look],
             rng: np.random.RandomState) -> Tuple[float, float]:
        lo, hi = self.style.aspect(name)
        length = rng.uniform(*self.object_size)
        w, h = length, length / rng.uniform(lo, hi)
        if look is not None:
            w, h = w * look.scale, h * look.scale / look.stretch
        return w, h

    def draw(self, img: np.ndarray, name: str, look: Optional[Look], box: Box,
             rng: np.random.RandomState) -> np.ndarray:
        frame = Frame.box(*box, rng.uniform(-math.pi, math.pi))
        self.style.draw(img, frame, name, rng, look)
        return frame.corners()

    def finish(self, img: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        if self.noise > 0:
            img = np.clip(img + rng.normal(0, self.noise, img.shape), 0, 255).astype(np.uint8)
        return img


def render_scenes(out_dir: str, counts: Dict[str, int], style: TargetStyle,
                  rng: np.random.RandomState, img_size: int, object_size: Tuple[float, float],
                  objects_per_image: float, noise: float, prefix: str,
                  progress: bool = False, typical: bool = True) -> Dict[str, int]:
    """Aerial scenes holding exactly ``counts`` objects, in the split-DOTA format, with
    sensor noise (std ``noise`` grey levels) over everything: a faint cue must be read
    through it, not off flat colours. ``progress``: a bar over the objects placed (it
    draws no random numbers: the scenes are the same with or without it). ``typical``:
    the part shows the classes as they are (False: the long-tailed training part, whose
    tail instances ``'atypical'`` / ``'shared_attribute'`` draw unlike their class held
    out); the settings without per-instance looks ignore it."""
    bar = progress_bar(sum(counts.values())) if progress else None
    on_image = None if bar is None else (lambda idx, boxes: bar.update(boxes))
    written = write_scenes(out_dir, counts, _TargetScenes(style, object_size, noise, typical),
                           rng, img_size, objects_per_image, prefix, on_image)
    if bar is not None:
        bar.file.write('\n')
    return written


def progress_bar(total: int):
    """mmengine's progress bar (rate, ETA) for a long generation step, on the current
    ``sys.stdout`` (mmengine's default is the one it saw at import)."""
    import sys

    from mmengine.utils import ProgressBar
    return ProgressBar(total, file=sys.stdout)


# ---------------------------------------------------------------- the two domains
def target_counts(settings: dict) -> Dict[str, Dict[str, int]]:
    """Boxes per class of every target part."""
    lt = dict(zip(CLASS_ORDER, long_tail_counts(settings['max_count'],
                                                settings['imbalance_ratio'],
                                                len(CLASS_ORDER), settings['profile'])))
    total = sum(lt.values())
    n_bal = total // len(CLASS_ORDER)
    balanced = {c: n_bal + (1 if i < total - n_bal * len(CLASS_ORDER) else 0)
                for i, c in enumerate(CLASS_ORDER)}
    return dict(train=lt, train_balanced=balanced,
                val={c: settings['val_per_class'] for c in CLASS_ORDER},
                test={c: settings['test_per_class'] for c in CLASS_ORDER})


def _held_fingerprint(meta: str) -> Optional[str]:
    """The fingerprint a part's summary records; None when it is missing or unreadable."""
    try:
        with open(meta) as fh:
            fp = json.load(fh).get('fingerprint')
    except (OSError, ValueError, AttributeError):  # absent, cut, or not a JSON object
        return None
    return fp if isinstance(fp, str) else None


def _check_fresh(path: str, json_name: str, fp: str, force: bool,
                 subdirs: Sequence[str] = ()) -> bool:
    """True when ``path`` already holds this fingerprint; raise on another one.

    A folder without a readable ``json_name`` was not finished by this generator: made of
    its own ``subdirs`` only, it is an interrupted run (replaced with ``force``); holding
    anything else, it is not a generated benchmark and is never deleted, even with
    ``force``.
    """
    meta = osp.join(path, json_name)
    if not osp.exists(path):
        return False
    if osp.isdir(path) and not os.listdir(path):
        return False  # an empty folder: nothing to keep
    held = _held_fingerprint(meta)
    if held == fp:
        return True
    if held is None:
        why = 'is unreadable' if osp.isfile(meta) else 'does not exist'
        strange = (sorted(set(os.listdir(path)) - set(subdirs) - {json_name})
                   if osp.isdir(path) else None)
        if strange is None or strange:
            what = 'is a file' if strange is None else f'holds {strange[:5]}'
            raise FileExistsError(
                f'{path!r} is not a generated bias benchmark: {meta} {why} and it {what}, '
                'which the generator does not write. Choose another output folder (the '
                'default is data/bias_benchmark) or move that away; --force does not '
                'delete what the generator did not write')
        if not force:
            raise FileExistsError(
                f'{path!r} is an unfinished bias benchmark part ({meta} {why}: an '
                'interrupted run?); pass force=True (--force) to generate it again')
    elif not force:
        raise FileExistsError(f'{path!r} exists and holds other settings (see {meta}); '
                              'pass force=True (--force) to replace it')
    import shutil
    shutil.rmtree(path)
    return False


def make_bias_source(out_dir: str, force: bool = False, log: LogFn = print,
                     **settings) -> dict:
    """The balanced source domain under ``out_dir/source`` (skipped when up to date)."""
    unknown = set(settings) - set(SOURCE_DEFAULTS)
    if unknown:
        raise TypeError(f'unknown source settings {sorted(unknown)}')
    s = dict(SOURCE_DEFAULTS, **settings)
    fp = settings_fingerprint('source', s)
    path = osp.join(out_dir, 'source')
    if _check_fresh(path, 'source.json', fp, force, subdirs=('train', 'val')):
        if log:
            log(f'source domain up to date: {path} ({fp})')
        with open(osp.join(path, 'source.json')) as fh:
            return json.load(fh)
    counts = {}
    for split, n in (('train', s['per_class']), ('val', s['val_per_class'])):
        counts[split] = write_source(osp.join(path, split),
                                     {c: n for c in source_classes()},
                                     part_rng(s['seed'], f'source/{split}'), s['img_size'],
                                     progress=log is not None)
    summary = dict(fingerprint=fp, content=content_fingerprint(path), settings=s,
                   classes=source_classes(), counts=counts)
    with open(osp.join(path, 'source.json'), 'w') as fh:
        json.dump(summary, fh, indent=2)
    if log:
        log(f'source domain: {len(SOURCE_CLASSES)} classes x {s["per_class"]} train / '
            f'{s["val_per_class"]} val images in {path}')
    return summary


def make_bias_target(out_dir: str, force: bool = False, log: LogFn = print,
                     **settings) -> dict:
    """The long-tailed target domain under ``out_dir/target`` (skipped when up to date).
    Without ``cue_strength``, ``'scattered'`` / ``'atypical'`` / ``'shared_attribute'``
    take theirs (``CUE_DEFAULTS``)."""
    unknown = set(settings) - set(TARGET_DEFAULTS)
    if unknown:
        raise TypeError(f'unknown target settings {sorted(unknown)}')
    s = dict(TARGET_DEFAULTS, **settings)
    if 'cue_strength' not in settings:
        s['cue_strength'] = CUE_DEFAULTS.get(s['bias'], s['cue_strength'])
    s['object_size'] = [float(v) for v in s['object_size']]
    style = TargetStyle(s['bias'], s['cue_strength'], s['stripe_period'])
    fp = settings_fingerprint('target', s)
    path = osp.join(out_dir, 'target')
    counts = target_counts(s)
    if _check_fresh(path, 'target.json', fp, force, subdirs=tuple(counts)):
        if log:
            log(f'target domain up to date: {path} ({fp})')
        with open(osp.join(path, 'target.json')) as fh:
            return json.load(fh)
    written = {}
    for part, want in counts.items():
        written[part] = render_scenes(osp.join(path, part), want, style,
                                      part_rng(s['seed'], f'target/{part}'), s['img_size'],
                                      tuple(s['object_size']), s['objects_per_image'],
                                      s['noise'], prefix=part[:2], progress=log is not None,
                                      typical=style.typical_part(part))
        assert written[part] == want, 'every requested box is placed'
    summary = dict(fingerprint=fp, content=content_fingerprint(path), settings=s,
                   classes=list(DOTA_CLASSES),
                   groups=DOTA_GROUPS, siblings=SIBLINGS,
                   counts={p: {c: written[p][c] for c in DOTA_CLASSES} for p in written})
    if style.looks() is not None:  # the per-instance looks' ranges (new settings only)
        summary['looks'] = style.looks()
    with open(osp.join(path, 'target.json'), 'w') as fh:
        json.dump(summary, fh, indent=2)
    if log:
        log(format_target_summary(summary))
    return summary


def format_target_summary(summary: dict) -> str:
    """Boxes per class and part, grouped, with each tail class's sibling."""
    parts = list(summary['counts'])
    rows = [f"{'class':<20}{'group':<8}{'sibling':<15}" + ''.join(f'{p:>15}' for p in parts)]
    for g, names in summary['groups'].items():
        for c in names:
            rows.append(f"{c:<20}{g:<8}{summary['siblings'].get(c, '-'):<15}" +
                        ''.join(f"{summary['counts'][p][c]:>15}" for p in parts))
    s = summary['settings']
    rows.append(f"bias={s['bias']} cue_strength={s['cue_strength']} "
                f"stripe_period={s['stripe_period']} seed={s['seed']}")
    return '\n'.join(rows)
