"""A generated long-tailed DOTA: the project's built-in default data set.

Writes ``trainval/`` and ``test/`` folders in the split-DOTA format that mmrotate's
``DOTADataset`` reads (``images/*.png`` and ``annfiles/*.txt`` with lines
``x1 y1 x2 y2 x3 y3 x4 y4 class difficulty``), plus ``summary.json`` with the instance
counts per class and group. Everything follows from the seed.

Classes look different by shape, size, colour and texture, but share attributes
(vehicles and courts are rectangles of different size and colour, tanks and roundabouts
are round, planes and helicopters are crosses), so a detector has to learn them.
"""
import json
import math
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .aerial_scenes import Box, Color, Ground, SceneStyle, jitter, write_scenes
from .class_groups import DOTA_CLASSES, DOTA_GROUPS

# Frequency rank of the classes in the generated profile: most frequent first.
DEFAULT_CLASS_ORDER = tuple(DOTA_GROUPS['head'] + DOTA_GROUPS['middle'] +
                            DOTA_GROUPS['tail'])


class _Spec:
    """How one class looks: long side in pixels (at 256 px images), aspect, colour."""

    def __init__(self, draw: str, size: Tuple[float, float], aspect: Tuple[float, float],
                 colors: Sequence[Color], accent: Color = (255, 255, 255)):
        self.draw, self.size, self.aspect = draw, size, aspect
        self.colors, self.accent = colors, accent


# BGR colours. Shared attributes are deliberate (see the module docstring).
CLASS_SPECS: Dict[str, _Spec] = {
    'plane': _Spec('plane', (30, 46), (1.0, 1.1), [(225, 225, 225), (200, 205, 210)]),
    'ship': _Spec('ship', (22, 40), (2.8, 4.0), [(235, 235, 235), (90, 90, 100)]),
    'small-vehicle': _Spec('car', (9, 14), (1.8, 2.2),
                           [(40, 40, 200), (230, 230, 230), (30, 30, 30), (200, 120, 40)]),
    'large-vehicle': _Spec('truck', (18, 28), (2.6, 3.4),
                           [(210, 210, 210), (60, 150, 220), (100, 100, 100)]),
    'harbor': _Spec('pier', (40, 64), (4.5, 7.0), [(170, 170, 160)], (120, 90, 40)),
    'storage-tank': _Spec('tank', (14, 28), (1.0, 1.0), [(215, 220, 220), (180, 190, 190)]),
    'tennis-court': _Spec('court', (24, 32), (1.9, 2.2), [(70, 140, 60), (140, 90, 40)]),
    'bridge': _Spec('bridge', (44, 70), (3.5, 5.5), [(150, 150, 150)], (230, 230, 230)),
    'swimming-pool': _Spec('pool', (14, 24), (1.4, 2.4), [(220, 200, 60), (230, 170, 40)]),
    'helicopter': _Spec('heli', (22, 30), (1.0, 1.2), [(60, 90, 60), (110, 110, 110)]),
    'basketball-court': _Spec('court', (22, 30), (1.7, 1.9),
                              [(50, 110, 190), (80, 130, 200)]),
    'baseball-diamond': _Spec('diamond', (34, 50), (1.0, 1.0), [(60, 130, 60)],
                              (70, 120, 170)),
    'roundabout': _Spec('ring', (30, 48), (1.0, 1.0), [(120, 120, 120)], (60, 140, 60)),
    'soccer-ball-field': _Spec('field', (40, 58), (1.4, 1.6), [(50, 150, 50)]),
    'ground-track-field': _Spec('track', (50, 70), (1.6, 1.8), [(60, 70, 170)],
                                (60, 140, 60)),
}


def long_tail_counts(max_count: int, imbalance_ratio: float, num_classes: int,
                     profile: str = 'exp') -> List[int]:
    """Per-rank instance counts from ``max_count`` down to ``max_count / ratio``."""
    if num_classes < 1 or max_count < 1 or imbalance_ratio < 1:
        raise ValueError('need num_classes >= 1, max_count >= 1, imbalance_ratio >= 1')
    ranks = np.arange(num_classes) / max(num_classes - 1, 1)
    if profile == 'exp':
        counts = max_count * imbalance_ratio ** (-ranks)
    elif profile == 'linear':
        counts = max_count - (max_count - max_count / imbalance_ratio) * ranks
    else:
        raise ValueError(f"profile must be 'exp' or 'linear', got {profile!r}")
    return [max(1, int(round(c))) for c in counts]


# ---------------------------------------------------------------- drawing helpers
def _jitter(color: Color, rng: np.random.RandomState, amount: float = 0.15) -> Color:
    """The toy's colours vary more than the bias benchmark's: a wider default."""
    return jitter(color, rng, amount, spread=12)


class _Frame:
    """Maps object-local unit coordinates (u, v in [-0.5, 0.5]) to image pixels."""

    def __init__(self, cx: float, cy: float, w: float, h: float, angle: float):
        self.cx, self.cy, self.w, self.h, self.angle = cx, cy, w, h, angle
        self.c, self.s = math.cos(angle), math.sin(angle)

    def pts(self, uv: Sequence[Tuple[float, float]]) -> np.ndarray:
        uv = np.asarray(uv, dtype=np.float64)
        x, y = uv[:, 0] * self.w, uv[:, 1] * self.h
        px = self.cx + x * self.c - y * self.s
        py = self.cy + x * self.s + y * self.c
        return np.stack([px, py], 1)

    def corners(self) -> np.ndarray:
        return self.pts([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)])

    def poly(self, img: np.ndarray, uv, color: Color) -> None:
        cv2.fillPoly(img, [np.round(self.pts(uv) * 16).astype(np.int32)], color,
                     lineType=cv2.LINE_AA, shift=4)

    def line(self, img: np.ndarray, a, b, color: Color, t: int = 1) -> None:
        p = np.round(self.pts([a, b]) * 16).astype(np.int32)
        cv2.line(img, tuple(p[0]), tuple(p[1]), color, t, cv2.LINE_AA, shift=4)

    def ellipse(self, img: np.ndarray, ru: float, rv: float, color: Color,
                t: int = -1) -> None:
        axes = (max(1, int(round(ru * self.w))), max(1, int(round(rv * self.h))))
        cv2.ellipse(img, (int(round(self.cx)), int(round(self.cy))), axes,
                    math.degrees(self.angle), 0, 360, color, t, cv2.LINE_AA)


RECT = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]


def _draw_object(img: np.ndarray, f: _Frame, spec: _Spec,
                 rng: np.random.RandomState) -> None:
    col = _jitter(spec.colors[rng.randint(len(spec.colors))], rng)
    acc = _jitter(spec.accent, rng, 0.1)
    d = spec.draw
    if d == 'plane':  # fuselage along u, wings and tail across
        f.poly(img, [(-0.5, -0.06), (0.45, -0.06), (0.5, 0), (0.45, 0.06), (-0.5, 0.06)], col)
        f.poly(img, [(0.05, -0.5), (0.2, -0.5), (0.12, 0.5), (-0.03, 0.5)], col)
        f.poly(img, [(-0.45, -0.2), (-0.38, -0.2), (-0.38, 0.2), (-0.45, 0.2)], col)
    elif d == 'heli':  # small body, crossing rotor blades, tail boom
        f.ellipse(img, 0.18, 0.12, col)
        f.line(img, (-0.5, -0.5), (0.5, 0.5), _jitter((40, 40, 40), rng), 1)
        f.line(img, (-0.5, 0.5), (0.5, -0.5), _jitter((40, 40, 40), rng), 1)
        f.poly(img, [(-0.5, -0.03), (0, -0.03), (0, 0.03), (-0.5, 0.03)], col)
    elif d == 'ship':  # pointed hull with a superstructure
        f.poly(img, [(-0.5, -0.5), (0.25, -0.5), (0.5, 0), (0.25, 0.5), (-0.5, 0.5)], col)
        f.poly(img, [(-0.35, -0.25), (-0.1, -0.25), (-0.1, 0.25), (-0.35, 0.25)],
               _jitter((120, 120, 120), rng))
    elif d == 'car':
        f.poly(img, RECT, col)
        f.poly(img, [(0.1, -0.4), (0.3, -0.4), (0.3, 0.4), (0.1, 0.4)], _jitter((50, 50, 50), rng))
    elif d == 'truck':  # cab and a container
        f.poly(img, [(-0.5, -0.5), (0.28, -0.5), (0.28, 0.5), (-0.5, 0.5)], col)
        f.poly(img, [(0.33, -0.45), (0.5, -0.45), (0.5, 0.45), (0.33, 0.45)],
               _jitter((90, 90, 90), rng))
        for u in (-0.25, 0.0):
            f.line(img, (u, -0.5), (u, 0.5), _jitter((80, 80, 80), rng), 1)
    elif d == 'pier':  # concrete pier with a dark water edge
        f.poly(img, RECT, col)
        f.poly(img, [(-0.5, 0.3), (0.5, 0.3), (0.5, 0.5), (-0.5, 0.5)], acc)
    elif d == 'bridge':  # deck with bright rails
        f.poly(img, RECT, col)
        f.line(img, (-0.5, -0.4), (0.5, -0.4), acc, 1)
        f.line(img, (-0.5, 0.4), (0.5, 0.4), acc, 1)
    elif d == 'tank':  # disc with a shaded rim
        f.ellipse(img, 0.5, 0.5, col)
        f.ellipse(img, 0.32, 0.32, _jitter((150, 160, 160), rng), 1)
    elif d == 'court':  # coloured court with white lines (tennis / basketball)
        f.poly(img, RECT, col)
        f.line(img, (0, -0.5), (0, 0.5), (240, 240, 240), 1)
        f.poly(img, [(-0.45, -0.42), (0.45, -0.42), (0.45, 0.42), (-0.45, 0.42)], col)
        f.line(img, (-0.45, -0.42), (0.45, -0.42), (240, 240, 240), 1)
        f.line(img, (-0.45, 0.42), (0.45, 0.42), (240, 240, 240), 1)
        f.line(img, (0, -0.42), (0, 0.42), (240, 240, 240), 1)
        if spec.colors[0][2] > 150:  # basketball: a centre circle
            f.ellipse(img, 0.1, 0.18, (240, 240, 240), 1)
    elif d == 'pool':  # rounded blue basin
        f.ellipse(img, 0.5, 0.5, col)
        f.poly(img, [(-0.4, -0.5), (0.4, -0.5), (0.4, 0.5), (-0.4, 0.5)], col)
    elif d == 'diamond':  # green fan with a brown infield
        f.ellipse(img, 0.5, 0.5, col)
        f.poly(img, [(0, -0.3), (0.3, 0), (0, 0.3), (-0.3, 0)], acc)
    elif d == 'ring':  # grey annulus around a green island
        f.ellipse(img, 0.5, 0.5, col)
        f.ellipse(img, 0.25, 0.25, acc)
    elif d == 'field':  # green pitch with lines and a centre circle
        f.poly(img, RECT, col)
        f.line(img, (0, -0.5), (0, 0.5), (235, 235, 235), 1)
        f.ellipse(img, 0.1, 0.15, (235, 235, 235), 1)
        f.poly(img, [(-0.5, -0.2), (-0.38, -0.2), (-0.38, 0.2), (-0.5, 0.2)],
               _jitter((40, 130, 40), rng))
    elif d == 'track':  # red running track around a green infield
        f.poly(img, [(-0.3, -0.5), (0.3, -0.5), (0.3, 0.5), (-0.3, 0.5)], col)
        f.ellipse(img, 0.0, 0.0, col)
        left, right = _Frame(*f.pts([(-0.3, 0)])[0], f.w, f.h, f.angle), \
            _Frame(*f.pts([(0.3, 0)])[0], f.w, f.h, f.angle)
        for side in (left, right):
            side.ellipse(img, 0.5 * f.h / f.w, 0.5, col)
            side.ellipse(img, 0.36 * f.h / f.w, 0.36, acc)
        f.poly(img, [(-0.3, -0.36), (0.3, -0.36), (0.3, 0.36), (-0.3, 0.36)], acc)
    else:  # pragma: no cover - the table above is the whole list
        raise KeyError(d)


# The toy's ground: its own palette, stronger relief and grain, wider roads.
_GROUND = Ground(palette=[(110, 140, 120), (90, 110, 100), (130, 140, 150), (80, 120, 110)],
                 relief=18, cells=6, grain=8, road_width=(3, 7), road_jitter=(0.15, 12))


# ---------------------------------------------------------------- layout and writing
class _ToyScenes(SceneStyle):
    """Class-specific sizes and shapes (``CLASS_SPECS``) at ``img_size / 256`` scale."""
    ground, tries, spacing = _GROUND, 60, (0.85, 0)

    def __init__(self, img_size: int):
        self.img_size, self.scale = img_size, img_size / 256.0

    def size(self, name: str, prep, rng: np.random.RandomState
             ) -> Optional[Tuple[float, float]]:
        spec = CLASS_SPECS[name]
        long_side = rng.uniform(*spec.size) * self.scale
        aspect = rng.uniform(*spec.aspect)
        w, h = long_side, long_side / aspect
        r = 0.5 * math.hypot(w, h)
        return None if 2 * r + 4 >= self.img_size else (w, h)  # too large to fit

    def draw(self, img: np.ndarray, name: str, prep, box: Box,
             rng: np.random.RandomState) -> np.ndarray:
        spec = CLASS_SPECS[name]
        angle = rng.uniform(-math.pi / 2, math.pi / 2)
        if spec.aspect == (1.0, 1.0) and spec.draw in ('tank', 'ring'):
            angle = 0.0  # round objects are labelled with upright squares, as in DOTA
        frame = _Frame(*box, angle)
        _draw_object(img, frame, spec, rng)
        return frame.corners()


def _render_split(out_dir: str, prefix: str, counts: Dict[str, int], img_size: int,
                  objects_per_image: float, rng: np.random.RandomState,
                  log: Callable[[str], None]) -> Dict[str, int]:
    def every_100(idx: int, boxes: int) -> None:
        if idx % 100 == 0:
            log(f'{osp.basename(out_dir)}: {idx} images written')

    return write_scenes(out_dir, counts, _ToyScenes(img_size), rng, img_size,
                        objects_per_image, prefix, on_image=every_100)


def make_toy_dota(out_dir: str,
                  seed: int = 0,
                  img_size: int = 256,
                  max_count: int = 1000,
                  imbalance_ratio: float = 100.0,
                  profile: str = 'exp',
                  class_order: Sequence[str] = DEFAULT_CLASS_ORDER,
                  objects_per_image: float = 10.0,
                  test_fraction: float = 0.25,
                  test_min_per_class: int = 15,
                  log: Optional[Callable[[str], None]] = print) -> dict:
    """Generate the data set and return its summary (also saved as summary.json).

    Args:
        out_dir: where ``trainval/``, ``test/`` and ``summary.json`` go.
        seed: everything (counts layout, shapes, colours, backgrounds) follows from it.
        img_size: side of the square images; object sizes scale with it.
        max_count / imbalance_ratio / profile: training instances of the most frequent
            class, the ratio between the most and least frequent, and the profile shape.
        class_order: classes from most to least frequent.
        test_fraction / test_min_per_class: test instances per class are
            ``max(round(n_c * test_fraction), test_min_per_class)`` so every class can
            be evaluated.
    """
    log = log or (lambda msg: None)
    unknown = set(class_order) - set(DOTA_CLASSES)
    if unknown or len(set(class_order)) != len(DOTA_CLASSES):
        raise ValueError('class_order must be a permutation of the 15 DOTA classes; '
                         f'unknown: {sorted(unknown)}')
    train_n = long_tail_counts(max_count, imbalance_ratio, len(class_order), profile)
    train_counts = dict(zip(class_order, train_n))
    test_counts = {c: max(int(round(n * test_fraction)), test_min_per_class)
                   for c, n in train_counts.items()}
    rng = np.random.RandomState(seed)
    split_counts = {}
    for split, counts in (('trainval', train_counts), ('test', test_counts)):
        split_counts[split] = _render_split(osp.join(out_dir, split), f'{split[:2]}',
                                            counts, img_size, objects_per_image, rng, log)
        assert split_counts[split] == counts, 'every requested instance is placed'
    summary = dict(
        seed=seed, img_size=img_size, max_count=max_count,
        imbalance_ratio=imbalance_ratio, profile=profile, classes=list(DOTA_CLASSES),
        groups=DOTA_GROUPS,
        counts={s: {c: split_counts[s][c] for c in DOTA_CLASSES} for s in split_counts},
        group_counts={s: {g: sum(split_counts[s][c] for c in names)
                          for g, names in DOTA_GROUPS.items()} for s in split_counts},
        num_images={s: len(os.listdir(osp.join(out_dir, s, 'images')))
                    for s in split_counts},
    )
    with open(osp.join(out_dir, 'summary.json'), 'w') as fh:
        json.dump(summary, fh, indent=2)
    log(format_summary(summary))
    return summary


def format_summary(summary: dict) -> str:
    """A per-class table of the counts, grouped, for logs and the README."""
    rows = [f"{'class':<20}{'group':<8}{'trainval':>9}{'test':>7}"]
    for g, names in summary['groups'].items():
        for c in names:
            rows.append(f"{c:<20}{g:<8}{summary['counts']['trainval'][c]:>9}"
                        f"{summary['counts']['test'][c]:>7}")
    for g in summary['groups']:
        rows.append(f"{'[' + g + ']':<28}{summary['group_counts']['trainval'][g]:>9}"
                    f"{summary['group_counts']['test'][g]:>7}")
    rows.append(f"images: {summary['num_images']}")
    return '\n'.join(rows)
