"""The source domain: object-centric "natural" images on which the foundation is trained.

It stands in for the natural images a real foundation model saw: another rendering
(side views with shear and tilt instead of top-down boxes, cluttered indoor-like
backgrounds, textures), and classes that share parts and shapes with the aerial classes
without being them (a bird's cross, a wheel's ring, a book's bands, a fish's pointed hull).
Colour and texture are nuisances here: every object gets a random hue and, half of the
time, a random texture (stripes, dots or grain), so the foundation learns shapes and parts
and is never asked to read stripes, the cue that the strong bias setting makes the tail
classes depend on.

Written as an mmpretrain ``CustomDataset`` folder (``<split>/<class>/<n>.png``).
"""
import math
import os
import os.path as osp
from typing import Callable, Dict, List

import cv2
import numpy as np

from ..aerial_scenes import Color, jitter, smooth_noise
from .draw import Frame, hsv

RECT = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
DARK: Color = (40, 40, 45)
LIGHT: Color = (230, 230, 230)


def _bird(img, f, c, rng):
    f.ellipse(img, 0.05, 0, 0.32, 0.1, c)
    f.poly(img, [(0.05, 0), (-0.2, -0.5), (-0.05, -0.5), (0.2, 0)], c)
    f.poly(img, [(0.05, 0), (-0.2, 0.5), (-0.05, 0.5), (0.2, 0)], c)
    f.poly(img, [(-0.25, 0), (-0.5, -0.15), (-0.5, 0.15)], c)


def _fish(img, f, c, rng):
    f.ellipse(img, 0.1, 0, 0.38, 0.3, c)
    f.poly(img, [(-0.25, 0), (-0.5, -0.3), (-0.5, 0.3)], c)
    f.ellipse(img, 0.32, -0.08, 0.04, 0.04, DARK)


def _book(img, f, c, rng):
    f.poly(img, RECT, c)
    f.poly(img, [(-0.5, -0.5), (-0.38, -0.5), (-0.38, 0.5), (-0.5, 0.5)], jitter(DARK, rng))
    for v in (-0.25, 0.0, 0.25):
        f.line(img, (-0.3, v), (0.45, v), LIGHT, 1)


def _phone(img, f, c, rng):
    f.poly(img, [(-0.45, -0.5), (0.45, -0.5), (0.5, -0.4), (0.5, 0.4), (0.45, 0.5),
                 (-0.45, 0.5), (-0.5, 0.4), (-0.5, -0.4)], c)
    f.poly(img, [(-0.38, -0.35), (0.38, -0.35), (0.38, 0.35), (-0.38, 0.35)],
           jitter(DARK, rng))


def _wheel(img, f, c, rng):
    f.ellipse(img, 0, 0, 0.5, 0.5, c, 3)
    for a in range(6):
        t = a * math.pi / 3
        f.line(img, (0, 0), (0.48 * math.cos(t), 0.48 * math.sin(t)), c, 1)
    f.ellipse(img, 0, 0, 0.12, 0.12, c)


def _clock(img, f, c, rng):
    f.ellipse(img, 0, 0, 0.5, 0.5, c)
    f.ellipse(img, 0, 0, 0.4, 0.4, LIGHT, 1)
    f.line(img, (0, 0), (0, -0.3), DARK, 2)
    f.line(img, (0, 0), (0.22, 0.05), DARK, 2)


def _window(img, f, c, rng):
    f.poly(img, RECT, c)
    f.poly(img, [(-0.4, -0.4), (0.4, -0.4), (0.4, 0.4), (-0.4, 0.4)], jitter(LIGHT, rng))
    f.line(img, (0, -0.4), (0, 0.4), c, 2)
    f.line(img, (-0.4, 0), (0.4, 0), c, 2)


def _ladder(img, f, c, rng):
    for v in (-0.4, 0.4):
        f.line(img, (-0.5, v), (0.5, v), c, 2)
    for u in np.linspace(-0.4, 0.4, 5):
        f.line(img, (u, -0.4), (u, 0.4), c, 1)


def _kite(img, f, c, rng):
    f.poly(img, [(0.5, 0), (0, -0.35), (-0.5, 0), (0, 0.35)], c)
    f.line(img, (0.5, 0), (-0.5, 0), DARK, 1)
    f.line(img, (0, -0.35), (0, 0.35), DARK, 1)


def _leaf(img, f, c, rng):
    f.poly(img, [(0.5, 0), (0.2, -0.4), (-0.2, -0.45), (-0.5, 0), (-0.2, 0.45), (0.2, 0.4)], c)
    f.line(img, (-0.5, 0), (0.5, 0), jitter(DARK, rng), 1)


def _star(img, f, c, rng):
    pts = [(0.5 * (1 if k % 2 == 0 else 0.45) * math.cos(math.pi * k / 5 - math.pi / 2),
            0.5 * (1 if k % 2 == 0 else 0.45) * math.sin(math.pi * k / 5 - math.pi / 2))
           for k in range(10)]
    f.poly(img, pts, c)


def _mug(img, f, c, rng):
    f.poly(img, [(-0.5, -0.5), (0.25, -0.5), (0.25, 0.5), (-0.5, 0.5)], c)
    f.ellipse(img, 0.3, 0, 0.18, 0.25, c, 2)


SOURCE_CLASSES: Dict[str, Callable] = {
    'bird': _bird, 'fish': _fish, 'book': _book, 'phone': _phone, 'wheel': _wheel,
    'clock': _clock, 'window': _window, 'ladder': _ladder, 'kite': _kite, 'leaf': _leaf,
    'star': _star, 'mug': _mug,
}
SOURCE_ASPECT = {'bird': 1.1, 'fish': 2.0, 'book': 1.4, 'phone': 1.8, 'ladder': 2.5,
                 'leaf': 2.0, 'mug': 1.3, 'kite': 1.4}


def _background(size: int, rng: np.random.RandomState) -> np.ndarray:
    """Indoor-like: a gradient between two random colours, soft noise, a few blobs."""
    a, b = (np.array(hsv(rng.uniform(0, 360), rng.uniform(0, 0.5), rng.uniform(0.3, 0.9)),
                     np.float32) for _ in range(2))
    t = np.linspace(0, 1, size, dtype=np.float32)
    grad = t[:, None, None] if rng.rand() < 0.5 else t[None, :, None]
    img = a * (1 - grad) + b * grad + 20 * smooth_noise((size, size), 4, rng)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.randint(0, 4)):
        c = tuple(int(v) for v in rng.randint(0, 256, 3))
        cv2.ellipse(img, tuple(int(v) for v in rng.randint(0, size, 2)),
                    tuple(int(v) for v in rng.randint(2, size // 6, 2)),
                    float(rng.uniform(0, 180)), 0, 360, c, -1, cv2.LINE_AA)
    return img


def _texture(img: np.ndarray, mask: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """A random texture (stripes, dots or grain) modulating the pixels under ``mask``."""
    size = img.shape[0]
    kind = rng.randint(3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:
        t = rng.uniform(0, np.pi)
        mod = 0.75 + 0.25 * np.sign(np.sin((xx * np.cos(t) + yy * np.sin(t)) *
                                           rng.uniform(0.4, 1.0)))
    elif kind == 1:
        mod = np.ones((size, size), np.float32)
        for _ in range(rng.randint(8, 20)):
            cv2.circle(mod, tuple(int(v) for v in rng.randint(0, size, 2)),
                       int(rng.randint(1, 4)), 0.6, -1)
    else:
        mod = 1 + 0.3 * rng.randn(size, size).astype(np.float32)
    out = img.astype(np.float32) * np.where(mask[..., None], mod[..., None], 1)
    return np.clip(out, 0, 255).astype(np.uint8)


def render_source_image(name: str, rng: np.random.RandomState, size: int = 32,
                        scale: int = 2) -> np.ndarray:
    """One object of class ``name`` in a random view, colour and texture."""
    big = size * scale
    img = _background(big, rng)
    aspect = SOURCE_ASPECT.get(name, 1.0)
    length = big * rng.uniform(0.55, 0.85)
    w, h = length, length / aspect
    t = rng.uniform(-math.pi / 4, math.pi / 4)
    shear = rng.uniform(-0.3, 0.3)
    flip = -1.0 if rng.rand() < 0.5 else 1.0
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    matrix = rot @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag([flip * w, h])
    cx, cy = big / 2 + rng.uniform(-0.08, 0.08, 2) * big
    frame = Frame(cx, cy, matrix)
    colour = hsv(rng.uniform(0, 360), rng.uniform(0.3, 0.9), rng.uniform(0.45, 0.95))
    before = img.copy()
    SOURCE_CLASSES[name](img, frame, colour, rng)
    if rng.rand() < 0.5:  # texture the pixels the object covers
        img = _texture(img, (img != before).any(2), rng)
    if rng.rand() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.2))
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def write_source(out_dir: str, per_class: Dict[str, int], rng: np.random.RandomState,
                 size: int = 32, progress: bool = False) -> Dict[str, int]:
    """``out_dir/<class>/<n>.png`` for every class; returns the counts. ``progress``: a
    bar (rate, ETA) over the images; it draws no random numbers."""
    bar = None
    if progress:
        from .generate import progress_bar
        bar = progress_bar(sum(per_class.values()))
    counts = {}
    for name, n in per_class.items():
        cls_dir = osp.join(out_dir, name)
        os.makedirs(cls_dir, exist_ok=True)
        for i in range(n):
            cv2.imwrite(osp.join(cls_dir, f'{i:05d}.png'), render_source_image(name, rng, size))
            if bar is not None:
                bar.update()
        counts[name] = n
    if bar is not None:
        bar.file.write('\n')
    return counts


def source_classes() -> List[str]:
    """Source class names in CustomDataset's order (sorted folder names)."""
    return sorted(SOURCE_CLASSES)
