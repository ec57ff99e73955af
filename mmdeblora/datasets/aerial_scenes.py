"""Generated aerial scenes in the split-DOTA format, shared by the toy DOTA
(``toy_dota.py``) and the bias benchmark's target domain (``bias_benchmark/``).

``write_scenes`` is the one placement loop: it deals the requested instances into
Poisson-sized batches, places each rotated box without overlap, lets a ``SceneStyle`` draw
it, and writes ``images/*.png`` and ``annfiles/*.txt``. What the generators do differently
(box sizes, drawing, ground, sensor noise) is the style's; the order in which random
numbers are drawn is fixed here, so a generator's output follows from its seed alone.
"""
import math
import os
import os.path as osp
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np

Color = Tuple[int, int, int]
Box = Tuple[float, float, float, float]  # cx, cy, w, h in pixels
Circle = Tuple[float, float, float]  # cx, cy, r: a placed box's bounding circle


def jitter(color: Color, rng: np.random.RandomState, amount: float = 0.1,
           spread: int = 8) -> Color:
    """Brightness jitter (x 1 +- ``amount``) plus per-channel noise (+- ``spread``)."""
    scale = 1 + rng.uniform(-amount, amount)
    return tuple(int(np.clip(c * scale + rng.randint(-spread, spread + 1), 0, 255))
                 for c in color)


def smooth_noise(size: Tuple[int, int], cells: int, rng: np.random.RandomState) -> np.ndarray:
    """Low-frequency noise [h, w, 3] with unit-ish amplitude."""
    h, w = size
    low = rng.randn(cells, cells, 3).astype(np.float32)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)


class Ground(NamedTuple):
    """Aerial ground: a base colour from ``palette``, low-frequency relief (``cells`` per
    side, amplitude ``relief``), grain (std ``grain``) and up to two roads."""
    palette: Sequence[Color]
    relief: float
    cells: int
    grain: float
    road_width: Tuple[int, int]  # randint's [low, high)
    road_jitter: Tuple[float, int]  # the road colour's jitter: amount, spread

    def render(self, size: int, rng: np.random.RandomState) -> np.ndarray:
        base = np.array(self.palette, np.float32)[rng.randint(len(self.palette))]
        img = base + self.relief * smooth_noise((size, size), self.cells, rng) + \
            self.grain * rng.randn(size, size, 3).astype(np.float32)
        img = np.clip(img, 0, 255).astype(np.uint8)
        for _ in range(rng.randint(0, 3)):
            p1, p2 = rng.randint(0, size, 2), rng.randint(0, size, 2)
            cv2.line(img, tuple(int(v) for v in p1), tuple(int(v) for v in p2),
                     jitter((95, 95, 95), rng, *self.road_jitter),
                     int(rng.randint(*self.road_width)), cv2.LINE_AA)
        return img


class SceneStyle:
    """What a generator decides in ``write_scenes``.

    Per instance: ``prepare`` (draws made once, before the placement tries), ``size`` (one
    try's box size, None: too large, try again) and ``draw`` (rotate, draw, return the
    box's corners [4, 2]). Per image: ``ground`` and ``finish`` (e.g. sensor noise, only
    for images that hold a box). Two boxes' centres stay farther apart than
    ``spacing[0] * (r1 + r2) + spacing[1]`` (r: the boxes' bounding radii).
    """
    ground: Ground
    tries: int
    spacing: Tuple[float, float]

    def prepare(self, name: str, rng: np.random.RandomState) -> Any:
        return None

    def size(self, name: str, prep: Any,
             rng: np.random.RandomState) -> Optional[Tuple[float, float]]:
        raise NotImplementedError

    def draw(self, img: np.ndarray, name: str, prep: Any, box: Box,
             rng: np.random.RandomState) -> np.ndarray:
        raise NotImplementedError

    def finish(self, img: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        return img


def _find_spot(style: SceneStyle, name: str, prep: Any, rng: np.random.RandomState,
               img_size: int, placed: List[Circle]) -> Optional[Tuple[Box, float]]:
    """A box that overlaps none of ``placed`` (with its radius), or None after the tries."""
    factor, margin = style.spacing
    for _ in range(style.tries):
        wh = style.size(name, prep, rng)
        if wh is None:
            continue
        w, h = wh
        r = 0.5 * math.hypot(w, h)
        cx, cy = rng.uniform(r + 2, img_size - r - 2, 2)
        if all(math.hypot(cx - x, cy - y) > factor * (r + q) + margin for x, y, q in placed):
            return (cx, cy, w, h), r
    return None


def write_scenes(out_dir: str, counts: Dict[str, int], style: SceneStyle,
                 rng: np.random.RandomState, img_size: int, objects_per_image: float,
                 prefix: str, on_image: Optional[Callable[[int, int], None]] = None
                 ) -> Dict[str, int]:
    """Scenes holding exactly ``counts`` instances under ``out_dir/{images,annfiles}``
    (``<prefix><n:05d>``); what does not fit in an image goes into the next one.
    ``on_image(images written, boxes in this one)`` draws no random numbers."""
    img_dir, ann_dir = osp.join(out_dir, 'images'), osp.join(out_dir, 'annfiles')
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    pending = [c for c, n in counts.items() for _ in range(n)]
    rng.shuffle(pending)
    written = {c: 0 for c in counts}
    idx = 0
    while pending:
        want = max(1, int(rng.poisson(objects_per_image)))
        batch, pending = pending[:want], pending[want:]
        img = style.ground.render(img_size, rng)
        placed: List[Circle] = []
        lines, leftover = [], []
        for name in batch:
            prep = style.prepare(name, rng)
            spot = _find_spot(style, name, prep, rng, img_size, placed)
            if spot is None:
                leftover.append(name)
                continue
            box, r = spot
            corners = style.draw(img, name, prep, box, rng)
            placed.append((box[0], box[1], r))
            lines.append(' '.join(f'{v:.1f}' for v in corners.reshape(-1)) + f' {name} 0')
            written[name] += 1
        pending = leftover + pending
        if not lines:
            continue
        img = style.finish(img, rng)
        stem = f'{prefix}{idx:05d}'
        cv2.imwrite(osp.join(img_dir, stem + '.png'), img)
        with open(osp.join(ann_dir, stem + '.txt'), 'w') as fh:
            fh.write('\n'.join(lines) + '\n')
        idx += 1
        if on_image is not None:
            on_image(idx, len(lines))
    return written
