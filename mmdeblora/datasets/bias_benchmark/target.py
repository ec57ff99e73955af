"""The aerial target domain: DOTA's 15 classes, each tail class a near relative of a head
or middle class, told apart by one cue whose kind is the bias dial.

Every tail class is drawn with its sibling's shape (``SIBLINGS``) plus one cue; colours
are random everywhere (a nuisance, as in the source), so shape and the cue are all there is:

- ``'weak'``: a white ring on the body, a part the source classes have (wheels, clocks),
  so the foundation already encodes it.
- ``'shared'``: fine stripes across the body; the head classes use stripes too
  (small-vehicle is drawn as a large-vehicle with stripes along its length), so training
  on the head classes teaches the representation to read stripes.
- ``'strong'``: the same stripes, but stripes are a nuisance everywhere else: half of the
  non-sibling objects carry random stripes here, as every source object may, so neither
  the foundation nor the head classes need them; only the tail does.
- ``'control'`` (negative control): tail classes get shapes of their own, the detection
  toy's situation, where a representation method must show no gain.

``cue_strength`` is the stripes' contrast (``'shared'`` / ``'strong'``, a modulation
amplitude in (0, 1]) or the ring's radius in unit object coordinates (``'weak'``, at most
0.45).

Two settings where the paper's premise can hold: tail classes with shapes of their own,
head / middle classes drawn as in ``'control'``, plus a per-instance ``Look``
(``looks.py``; ranges there and in ``target.json``) that ``cue_strength`` in (0, 1] scales.

- ``'scattered'``: every tail instance, in every part, draws six attributes: box size
  (x 1/1.5-1.5) and aspect (x 1/1.4-1.4), contrast against the terrain (0.4-1), a
  terrain-coloured patch over one end (half of them, up to 0.4 of the length), stripes
  (amplitude up to 0.5) and its distinctive part (missing with probability 0.5); values
  at ``cue_strength`` 1, every range (size and aspect on a log scale) shrinking in
  proportion toward ``'control'``. 10-50 training instances cannot cover that variation:
  the tail's features are scattered and under-sampled, in a region of their own.
- ``'atypical'``: the paper's figure captions show head features dominating and
  "misrepresenting tail classes" (method figure, a), K-means centers that "represent
  shared attributes between classes" (b; t-SNE figure, c-g) and h_c, a weighted average
  of centers, pulling the tail toward it (c; t-SNE figure, h). So a tail class's few
  training instances misrepresent it: 75 % are drawn in a rare imaging condition, small
  (box length x (1 - 0.45 s)) and faint (contrast 1 - 0.6 s; s = ``cue_strength``), a
  condition of 10 % of every class's instances in every part, head classes and the tail
  of train_balanced / val / test alike. The training mean leans toward the condition;
  the condition's clusters are mostly head instances, where the atypical tail instances
  are a small share, while the typical remainder is the bulk of its cluster and weighs
  most under ``balanced`` weighting: h_c can be nearer the held-out centroid than the
  training mean.

One setting built for premise c (h_c nearer the held-out centroid than the training mean;
docs/deblora.md, "A setting built for premise c"): ``'shared_attribute'``. Each tail class
is drawn as in ``'strong'`` (its sibling plus faint stripes, at the frozen contrast 0.05)
and shares one attribute with its sibling, a white ring on the body (``SHARED_ATTRIBUTE``
in ``looks.py``): a tenth of the sibling's instances show it in every part, the tail class
all of its val / test instances, but only 1 - ``cue_strength`` of its training instances,
in the long-tailed part and in train_balanced alike (a sampling bias of the training
source, images taken where the class looks like its head sibling; the oracle gets more of
the same source, so the ring is no shortcut for it). K-means can split ringed from plain
instances; the tail's ringed training instances are then a large share of their clusters
and its plain ones a small share of the sibling's, so ``balanced`` weighting can put h_c
nearer the ringed look the class has held out than its training mean is.
"""
import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ..aerial_scenes import Color, jitter
from .draw import Frame, hsv
from .looks import (ATYPICAL, SHARED_ATTRIBUTE, Look, atypical_look, look_ranges, occlude,
                    reduce_contrast, scattered_look, shared_attribute_look, terrain_under)

BIASES = ('weak', 'shared', 'strong', 'control', 'scattered', 'atypical', 'shared_attribute')
OWN_SHAPE_BIASES = ('control', 'scattered', 'atypical')  # tail classes: shapes of their own
STRIPED_TAIL_BIASES = ('shared', 'strong', 'shared_attribute')  # tail cue: stripes
# cue_strength when none is given (else TARGET_DEFAULTS'): the looks' full ranges; for
# 'shared_attribute' the share of tail training instances without the attribute
CUE_DEFAULTS = dict(scattered=1.0, atypical=1.0, shared_attribute=0.5)

# tail class -> the head / middle class it is drawn from
SIBLINGS: Dict[str, str] = {
    'helicopter': 'plane',
    'baseball-diamond': 'ship',
    'soccer-ball-field': 'large-vehicle',
    'basketball-court': 'tennis-court',
    'roundabout': 'storage-tank',
    'ground-track-field': 'swimming-pool',
}

# aspect ranges (length / width) of the base shapes
ASPECT: Dict[str, Tuple[float, float]] = {
    'plane': (1.0, 1.15), 'ship': (2.6, 3.4), 'small-vehicle': (1.8, 2.2),
    'large-vehicle': (2.6, 3.2), 'harbor': (3.5, 5.0), 'storage-tank': (1.0, 1.0),
    'tennis-court': (1.8, 2.1), 'bridge': (3.5, 5.0), 'swimming-pool': (1.4, 1.8),
    # shapes of their own in the negative control
    'helicopter': (1.0, 1.1), 'soccer-ball-field': (1.4, 1.6),
    'baseball-diamond': (1.0, 1.0), 'basketball-court': (1.0, 1.0),
    'roundabout': (1.0, 1.0), 'ground-track-field': (1.6, 1.9),
}
WHITE: Color = (235, 235, 235)
DARK: Color = (45, 45, 50)


# ---------------------------------------------------------------- base shapes
def _plane(img, f: Frame, body: Color, rng) -> None:
    f.poly(img, [(-0.5, -0.07), (0.42, -0.07), (0.5, 0), (0.42, 0.07), (-0.5, 0.07)], body)
    f.poly(img, [(0.02, -0.5), (0.2, -0.5), (0.14, 0.5), (-0.04, 0.5)], body)
    f.poly(img, [(-0.48, -0.2), (-0.38, -0.2), (-0.38, 0.2), (-0.48, 0.2)], body)


def _ship(img, f: Frame, body: Color, rng) -> None:
    f.poly(img, [(-0.5, -0.5), (0.25, -0.5), (0.5, 0), (0.25, 0.5), (-0.5, 0.5)], body)
    f.poly(img, [(-0.35, -0.25), (-0.05, -0.25), (-0.05, 0.25), (-0.35, 0.25)],
           jitter(DARK, rng))


def _small_vehicle(img, f: Frame, body: Color, rng) -> None:
    f.poly(img, [(-0.5, -0.45), (0.45, -0.45), (0.5, 0), (0.45, 0.45), (-0.5, 0.45)], body)
    f.poly(img, [(0.12, -0.38), (0.3, -0.38), (0.3, 0.38), (0.12, 0.38)], jitter(DARK, rng))
    f.poly(img, [(-0.42, -0.3), (-0.3, -0.3), (-0.3, 0.3), (-0.42, 0.3)], jitter(DARK, rng))


def _large_vehicle(img, f: Frame, body: Color, rng) -> None:
    f.poly(img, [(-0.5, -0.5), (0.26, -0.5), (0.26, 0.5), (-0.5, 0.5)], body)
    f.poly(img, [(0.32, -0.42), (0.5, -0.42), (0.5, 0.42), (0.32, 0.42)], jitter(DARK, rng))
    for u in (-0.25, 0.0):
        f.line(img, (u, -0.5), (u, 0.5), jitter(DARK, rng), 1)


def _harbor(img, f: Frame, body: Color, rng) -> None:
    f.poly(img, RECT_, body)
    f.poly(img, [(-0.5, 0.25), (0.5, 0.25), (0.5, 0.5), (-0.5, 0.5)],
           jitter((110, 70, 30), rng))


def _storage_tank(img, f: Frame, body: Color, rng) -> None:
    f.ellipse(img, 0, 0, 0.5, 0.5, body)
    f.ellipse(img, 0, 0, 0.36, 0.36, jitter(DARK, rng), 1)


def _tennis_court(img, f: Frame, body: Color, rng) -> None:
    f.poly(img, RECT_, body)
    for a, b in (((-0.42, -0.4), (0.42, -0.4)), ((-0.42, 0.4), (0.42, 0.4)),
                 ((-0.42, -0.4), (-0.42, 0.4)), ((0.42, -0.4), (0.42, 0.4)),
                 ((0, -0.4), (0, 0.4))):
        f.line(img, a, b, WHITE, 1)


def _bridge(img, f: Frame, body: Color, rng) -> None:
    f.poly(img, RECT_, body)
    f.line(img, (-0.5, -0.35), (0.5, -0.35), WHITE, 1)
    f.line(img, (-0.5, 0.35), (0.5, 0.35), WHITE, 1)


def _swimming_pool(img, f: Frame, body: Color, rng) -> None:
    f.ellipse(img, -0.25, 0, 0.25, 0.5, body)
    f.ellipse(img, 0.25, 0, 0.25, 0.5, body)
    f.poly(img, [(-0.25, -0.5), (0.25, -0.5), (0.25, 0.5), (-0.25, 0.5)], body)
    for v in (-0.2, 0.2):
        f.line(img, (-0.35, v), (0.35, v), WHITE, 1)


# ---------------------------------------------------------------- control tail shapes
# ``part=False`` leaves out the class's distinctive part (``'scattered'``'s part draw)
def _heli_own(img, f: Frame, body: Color, rng, part: bool = True) -> None:
    f.ellipse(img, 0.05, 0, 0.2, 0.16, body)
    f.poly(img, [(-0.5, -0.04), (0, -0.04), (0, 0.04), (-0.5, 0.04)], body)
    if part:  # the rotor
        f.line(img, (-0.45, -0.45), (0.5, 0.5), DARK, 1)
        f.line(img, (-0.45, 0.5), (0.5, -0.45), DARK, 1)


def _field_own(img, f: Frame, body: Color, rng, part: bool = True) -> None:
    for i in range(6):  # mowing stripes
        u0 = -0.5 + i / 6
        f.poly(img, [(u0, -0.5), (u0 + 1 / 6, -0.5), (u0 + 1 / 6, 0.5), (u0, 0.5)],
               jitter(body, rng, 0.25) if i % 2 else body)
    if part:  # the centre circle
        f.ellipse(img, 0, 0, 0.12, 0.18, WHITE, 1)


def _diamond_own(img, f: Frame, body: Color, rng, part: bool = True) -> None:
    f.poly(img, [(-0.5, 0.5), (-0.5, -0.1), (0.1, 0.5)], body)
    f.ellipse(img, -0.5, 0.5, 0.95, 0.95, body, 1)
    if part:  # the infield
        f.poly(img, [(-0.35, 0.35), (-0.1, 0.35), (-0.1, 0.1), (-0.35, 0.1)], WHITE)


def _basket_own(img, f: Frame, body: Color, rng, part: bool = True) -> None:
    f.poly(img, [(0, -0.5), (0.5, 0), (0, 0.5), (-0.5, 0)], body)  # a rhombus
    if part:  # the centre circle
        f.ellipse(img, 0, 0, 0.15, 0.15, WHITE, 1)


def _ring_own(img, f: Frame, body: Color, rng, part: bool = True) -> None:
    f.ellipse(img, 0, 0, 0.5, 0.5, body, 3)
    for a in range(4 if part else 0):  # the spokes
        t = a * math.pi / 2 + math.pi / 4
        f.line(img, (0.15 * math.cos(t), 0.15 * math.sin(t)),
               (0.45 * math.cos(t), 0.45 * math.sin(t)), body, 1)


def _track_own(img, f: Frame, body: Color, rng, part: bool = True) -> None:
    rings = ((0.5, body), (0.34, jitter((60, 140, 60), rng)))  # the track, the infield
    for r, col in rings if part else rings[:1]:
        f.ellipse(img, -0.22, 0, 0.28 * r / 0.5, r, col)
        f.ellipse(img, 0.22, 0, 0.28 * r / 0.5, r, col)
        f.poly(img, [(-0.22, -r), (0.22, -r), (0.22, r), (-0.22, r)], col)


RECT_ = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
DrawFn = Callable[[np.ndarray, Frame, Color, np.random.RandomState], None]
BASE_SHAPES: Dict[str, DrawFn] = {
    'plane': _plane, 'ship': _ship, 'small-vehicle': _small_vehicle,
    'large-vehicle': _large_vehicle, 'harbor': _harbor, 'storage-tank': _storage_tank,
    'tennis-court': _tennis_court, 'bridge': _bridge, 'swimming-pool': _swimming_pool,
}
OWN_SHAPES: Dict[str, DrawFn] = {
    'helicopter': _heli_own, 'soccer-ball-field': _field_own,
    'baseball-diamond': _diamond_own, 'basketball-court': _basket_own,
    'roundabout': _ring_own, 'ground-track-field': _track_own,
}


class TargetStyle:
    """How the classes look under one bias setting."""

    def __init__(self, bias: str = 'strong', cue_strength: float = 0.05,
                 stripe_period: float = 4.0):
        if bias not in BIASES:
            raise ValueError(f'bias must be one of {BIASES}, got {bias!r}')
        if not 0 < cue_strength <= (0.45 if bias == 'weak' else 1.0):
            raise ValueError(f'cue_strength out of range for bias={bias!r}: {cue_strength}')
        self.bias, self.cue_strength, self.stripe_period = bias, cue_strength, stripe_period

    def shape_of(self, name: str) -> str:
        """The base shape a class is drawn with under this setting."""
        if name in SIBLINGS:
            return name if self.bias in OWN_SHAPE_BIASES else SIBLINGS[name]
        if name == 'small-vehicle' and self.bias == 'shared':
            return 'large-vehicle'
        return name

    def aspect(self, name: str) -> Tuple[float, float]:
        return ASPECT[self.shape_of(name)]

    def _stripes(self, name: str, rng: np.random.RandomState
                 ) -> Optional[Tuple[float, float, float]]:
        """(angle in the object frame, period in pixels, amplitude) or None."""
        if name in SIBLINGS and self.bias in STRIPED_TAIL_BIASES:  # the tail cue
            contrast = SHARED_ATTRIBUTE['cue'] if self.bias == 'shared_attribute' else \
                self.cue_strength
            return math.pi / 2, self.stripe_period, contrast
        if name == 'small-vehicle' and self.bias == 'shared':
            return 0.0, self.stripe_period, self.cue_strength  # the head uses stripes
        if name not in SIBLINGS.values() and name not in SIBLINGS and \
                self.bias in ('strong', 'shared_attribute') + OWN_SHAPE_BIASES and \
                rng.rand() < 0.5:
            return rng.uniform(0, math.pi), rng.uniform(3, 6), rng.uniform(0.1, 0.4)
        return None

    def look(self, name: str, rng: np.random.RandomState,
             typical: bool = True) -> Optional[Look]:
        """The instance's ``Look`` under ``'scattered'`` / ``'atypical'`` /
        ``'shared_attribute'``; ``typical``: the part shows the classes as they are (all
        but the long-tailed training part). None, and no random number drawn, under the
        other settings and for the classes a setting leaves as they are."""
        if self.bias == 'scattered' and name in SIBLINGS:
            return scattered_look(rng, self.cue_strength)
        if self.bias == 'atypical':
            rate = ATYPICAL['rate'] if typical or name not in SIBLINGS else \
                ATYPICAL['tail_train_rate']
            return atypical_look(rng, self.cue_strength, rate)
        if self.bias == 'shared_attribute' and name in SIBLINGS:
            rate = SHARED_ATTRIBUTE['tail_rate']
            return shared_attribute_look(rng, rate if typical else rate * (1 - self.cue_strength))
        if self.bias == 'shared_attribute' and name in SIBLINGS.values():
            return shared_attribute_look(rng, SHARED_ATTRIBUTE['sibling_rate'])
        return None

    def typical_part(self, part: str) -> bool:
        """Whether a target part shows the classes as they are held out: all but the
        long-tailed training part, and under ``'shared_attribute'`` the oracle's
        train_balanced too (the oracle gets more of the same training source)."""
        atypical = ('train', 'train_balanced') if self.bias == 'shared_attribute' else \
            ('train', )
        return part not in atypical

    def looks(self) -> Optional[dict]:
        """The ranges of the per-instance looks (None: the setting draws none)."""
        return look_ranges(self.bias, self.cue_strength)

    def draw(self, img: np.ndarray, f: Frame, name: str, rng: np.random.RandomState,
             look: Optional[Look] = None) -> None:
        body = hsv(rng.uniform(0, 360), rng.uniform(0.35, 0.7), rng.uniform(0.55, 0.9))
        before = img.copy()
        shape = self.shape_of(name)
        draw_fn = OWN_SHAPES[name] if shape == name and name in SIBLINGS else \
            BASE_SHAPES[shape]
        if look is None or look.part:
            draw_fn(img, f, body, rng)
        else:
            draw_fn(img, f, body, rng, part=False)
        stripes = self._stripes(name, rng)
        if stripes is not None:
            stripe_texture(img, (img != before).any(2), f, *stripes)
        if name in SIBLINGS and self.bias == 'weak':
            r = self.cue_strength  # round in the (upright) crop
            f.ellipse(img, 0, 0, r, r, WHITE, 1)
        if look is not None:
            mask = (img != before).any(2)
            ground = terrain_under(before, mask)
            reduce_contrast(img, mask, ground, look.contrast)
            if look.texture is not None:
                stripe_texture(img, mask, f, *look.texture)
            occlude(img, f, ground, look.occlusion, look.occluded_end)
            if look.ring > 0:  # 'shared_attribute': round in the (upright) crop
                f.ellipse(img, 0, 0, look.ring, look.ring, WHITE, look.ring_width)


def stripe_texture(img: np.ndarray, mask: np.ndarray, f: Frame, angle: float,
                   period: float, amplitude: float) -> None:
    """Modulate the pixels under ``mask`` by ``1 + amplitude * sin``: stripes at
    ``angle`` from the object's length axis, ``period`` pixels apart."""
    ys, xs = np.nonzero(mask)
    axis = math.atan2(f.matrix[1, 0], f.matrix[0, 0]) + angle
    d = (xs - f.centre[0]) * math.cos(axis) + (ys - f.centre[1]) * math.sin(axis)
    mod = 1 + amplitude * np.sin(2 * math.pi * d / period)
    img[ys, xs] = np.clip(img[ys, xs].astype(np.float32) * mod[:, None], 0, 255)
