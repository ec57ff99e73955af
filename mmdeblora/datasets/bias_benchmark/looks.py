"""Per-instance looks of the settings built for debLoRA's premise (``'scattered'``,
``'atypical'``, ``'shared_attribute'``; the reasons are in ``target.py``).

A ``Look`` is drawn for an instance before its box is placed (it sets the box's size) and
applied after its shape is drawn. The older settings draw none, so their random streams,
and with them their outputs, are as they were.
"""
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .draw import Frame

# 'scattered', per tail instance, with s = cue_strength in (0, 1] scaling every range
SCATTERED = dict(
    scale=1.5,           # box length x exp(s ln 1.5 U(-1, 1)): 13.3-45 px at s = 1
    stretch=1.4,         # aspect x exp(s ln 1.4 U(-1, 1))
    contrast=0.6,        # contrast against the terrain 1 - 0.6 s U(0, 1)
    occluded=0.5,        # probability of a terrain-coloured patch over one end ...
    occlusion=0.4,       # ... hiding 0.4 s U(0, 1) of the length
    texture=0.5,         # stripes of amplitude 0.5 s U(0, 1), any angle, 3-6 px period
    period=(3.0, 6.0),
    part_missing=0.5)    # the distinctive part left out with probability 0.5 s
# 'atypical': the rare imaging condition (small and faint), its rate per instance
ATYPICAL = dict(
    rate=0.1,            # every class, every part: a shared attribute
    tail_train_rate=0.75,  # tail classes in the long-tailed training part
    scale=0.45,          # box length x (1 - 0.45 s): 11-16.5 px at s = 1
    contrast=0.6)        # contrast against the terrain 1 - 0.6 s
# 'shared_attribute': a white ring that each tail class shares with its sibling
SHARED_ATTRIBUTE = dict(
    ring=0.3,            # its radius (unit object coordinates) ...
    width=2,             # ... and width (px): smaller moved LoRA's features too little
    sibling_rate=0.1,    # the sibling's instances that show it, every part
    tail_rate=1.0,       # the tail's held-out instances that show it (training: x (1 - s))
    cue=0.05)            # the tail cue: the 'strong' stripes at their frozen contrast


@dataclass(frozen=True)
class Look:
    """How one instance departs from its class's plain drawing (defaults: not at all)."""
    scale: float = 1.0          # box length factor
    stretch: float = 1.0        # aspect (length / width) factor
    contrast: float = 1.0       # the drawn object's contrast against the terrain under it
    occlusion: float = 0.0      # share of the length under a terrain-coloured patch
    occluded_end: float = 1.0   # +1: the front end (u = +0.5), -1: the back
    texture: Optional[Tuple[float, float, float]] = None  # stripes (angle, period, ampl.)
    part: bool = True           # the class's distinctive part is drawn
    ring: float = 0.0           # radius of a white ring on the body (0: none) ...
    ring_width: int = 1         # ... and its width in pixels


def scattered_look(rng: np.random.RandomState, s: float) -> Look:
    """Six independent attributes from ranges that ``s`` scales (9 random draws)."""
    u_scale, u_stretch = rng.uniform(-1, 1, 2)
    contrast = 1 - SCATTERED['contrast'] * s * rng.rand()
    occluded, amount, end = rng.rand(3)
    texture = (rng.uniform(0, math.pi), rng.uniform(*SCATTERED['period']),
               SCATTERED['texture'] * s * rng.rand())
    part = rng.rand() >= SCATTERED['part_missing'] * s
    return Look(scale=math.exp(s * math.log(SCATTERED['scale']) * u_scale),
                stretch=math.exp(s * math.log(SCATTERED['stretch']) * u_stretch),
                contrast=contrast,
                occlusion=SCATTERED['occlusion'] * s * amount
                if occluded < SCATTERED['occluded'] else 0.0,
                occluded_end=1.0 if end < 0.5 else -1.0, texture=texture, part=part)


def atypical_look(rng: np.random.RandomState, s: float, rate: float) -> Optional[Look]:
    """Small and faint with probability ``rate`` (one random draw), else None."""
    if rng.rand() >= rate:
        return None
    return Look(scale=1 - ATYPICAL['scale'] * s, contrast=1 - ATYPICAL['contrast'] * s)


def shared_attribute_look(rng: np.random.RandomState, rate: float) -> Optional[Look]:
    """The shared attribute with probability ``rate`` (one random draw), else None."""
    return Look(ring=SHARED_ATTRIBUTE['ring'], ring_width=SHARED_ATTRIBUTE['width']) \
        if rng.rand() < rate else None


def look_ranges(bias: str, s: float) -> Optional[dict]:
    """What the looks of a setting are, for ``target.json`` (None for the older ones)."""
    if bias == 'scattered':
        return dict(applies_to='tail classes, every part',
                    scale=[SCATTERED['scale'] ** -s, SCATTERED['scale'] ** s],
                    stretch=[SCATTERED['stretch'] ** -s, SCATTERED['stretch'] ** s],
                    contrast=[1 - SCATTERED['contrast'] * s, 1.0],
                    occluded_probability=SCATTERED['occluded'],
                    occlusion=[0.0, SCATTERED['occlusion'] * s],
                    texture_amplitude=[0.0, SCATTERED['texture'] * s],
                    part_missing_probability=SCATTERED['part_missing'] * s)
    if bias == 'atypical':
        return dict(applies_to='small and faint instances',
                    rate=dict(tail_train=ATYPICAL['tail_train_rate'],
                              other=ATYPICAL['rate']),
                    scale=1 - ATYPICAL['scale'] * s, contrast=1 - ATYPICAL['contrast'] * s)
    if bias == 'shared_attribute':
        return dict(applies_to='a white ring on the tail classes and their siblings',
                    ring_radius=SHARED_ATTRIBUTE['ring'],
                    ring_width=SHARED_ATTRIBUTE['width'],
                    rate=dict(sibling=SHARED_ATTRIBUTE['sibling_rate'],
                              tail_held_out=SHARED_ATTRIBUTE['tail_rate'],
                              tail_train=SHARED_ATTRIBUTE['tail_rate'] * (1 - s)),
                    tail_cue_contrast=SHARED_ATTRIBUTE['cue'])
    return None


def terrain_under(before: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean colour [3] of the ground an object covers (``before`` it was drawn)."""
    return before[mask].astype(np.float32).mean(0) if mask.any() else \
        before.reshape(-1, 3).astype(np.float32).mean(0)


def reduce_contrast(img: np.ndarray, mask: np.ndarray, ground: np.ndarray,
                    contrast: float) -> None:
    """Blend the object's pixels toward the ground colour: ``ground + c (img - ground)``."""
    if contrast >= 1 or not mask.any():
        return
    px = img[mask].astype(np.float32)
    img[mask] = np.clip(ground + contrast * (px - ground), 0, 255).round().astype(np.uint8)


def occlude(img: np.ndarray, f: Frame, ground: np.ndarray, amount: float,
            end: float) -> None:
    """A flat ground-coloured patch over ``amount`` of the box's length from one end."""
    if amount <= 0:
        return
    u0, u1 = end * 0.5, end * (0.5 - amount)
    f.poly(img, [(u0, -0.5), (u1, -0.5), (u1, 0.5), (u0, 0.5)],
           tuple(int(round(float(c))) for c in ground))
