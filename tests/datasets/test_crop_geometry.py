import math

import cv2
import numpy as np
import pytest

from mmdeblora.datasets.crop_geometry import BoxFrame, crop_box, quad_to_frame

RED, BLUE = (0, 0, 255), (255, 0, 0)


def _corners(cx, cy, w, h, angle):
    """Corners in DOTA order: the first edge runs along w (the object's length)."""
    c, s = math.cos(angle), math.sin(angle)
    uv = np.array([(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)])
    return np.stack([cx + uv[:, 0] * w * c - uv[:, 1] * h * s,
                     cy + uv[:, 0] * w * s + uv[:, 1] * h * c], 1)


def _two_tone_box(angle, w=80.0, h=40.0, cx=100.0, cy=90.0, size=200):
    """A rotated box whose rear half (u < 0) is red and front half blue, on black."""
    img = np.zeros((size, size, 3), np.uint8)
    quad = _corners(cx, cy, w, h, angle)
    rear = np.stack([quad[0], (quad[0] + quad[1]) / 2, (quad[3] + quad[2]) / 2, quad[3]])
    front = np.stack([(quad[0] + quad[1]) / 2, quad[1], quad[2], (quad[3] + quad[2]) / 2])
    for poly, col in ((rear, RED), (front, BLUE)):
        cv2.fillPoly(img, [np.round(poly * 16).astype(np.int32)], col, cv2.LINE_AA, 4)
    return img, quad.reshape(-1)


@pytest.mark.parametrize('angle', [0.0, math.radians(30), math.radians(135),
                                   math.radians(-100)])
def test_frame_follows_the_first_edge(angle):
    frame = quad_to_frame(_corners(50, 60, 30, 12, angle).reshape(-1))
    assert frame.cx == pytest.approx(50, abs=1e-3) and frame.cy == pytest.approx(60, abs=1e-3)
    assert (frame.w, frame.h) == (pytest.approx(30, abs=1e-3), pytest.approx(12, abs=1e-3))
    d = (frame.angle - angle + math.pi) % (2 * math.pi) - math.pi
    assert d == pytest.approx(0, abs=1e-4)
    # the first edge along the short side: w is the short side then
    short_first = np.roll(_corners(50, 60, 30, 12, angle), -1, axis=0).reshape(-1)
    frame = quad_to_frame(short_first)
    assert (frame.w, frame.h) == (pytest.approx(12, abs=1e-3), pytest.approx(30, abs=1e-3))


@pytest.mark.parametrize('angle', [math.radians(30), math.radians(-150), math.radians(95)])
def test_rotated_box_gives_the_upright_crop(angle):
    img, quad = _two_tone_box(angle)
    crop = crop_box(img, quad_to_frame(quad), (40, 20), context=0.0, border='constant')
    assert crop.shape == (20, 40, 3)
    rear, front = crop[2:-2, 2:18].reshape(-1, 3), crop[2:-2, 22:38].reshape(-1, 3)
    assert np.abs(rear.astype(int) - RED).max() <= 12   # rear half left, whatever the angle
    assert np.abs(front.astype(int) - BLUE).max() <= 12
    # a context margin of 0.5 doubles the region: the box fills the middle half
    wide = crop_box(img, quad_to_frame(quad), (40, 20), context=0.5, border='constant')
    assert wide[:3].max() == 0 and wide[:, :5].max() == 0          # background around
    assert np.abs(wide[7:13, 12:18].astype(int) - RED).max() <= 12
    assert np.abs(wide[7:13, 22:28].astype(int) - BLUE).max() <= 12


def test_large_downscale_is_area_averaged_and_keep_ratio_squares():
    img, quad = _two_tone_box(math.radians(20), w=400, h=200, cx=300, cy=300, size=600)
    frame = quad_to_frame(quad)
    crop = crop_box(img, frame, 8, context=0.0)
    assert crop.shape == (8, 8, 3)
    assert np.abs(crop[:, :3].reshape(-1, 3).mean(0) - RED).max() < 10
    # keep_ratio: a square region of the long side, so the box covers the middle rows
    sq = crop_box(img, frame, 16, context=0.0, keep_ratio=True, border='constant')
    assert sq[:3].max() < 20 and sq[-3:].max() < 20 and sq[8, 2:14].max(-1).min() > 200


def test_bad_settings_are_refused():
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match='degenerate'):
        crop_box(img, BoxFrame(5, 5, 0, 3, 0), 8)
    with pytest.raises(ValueError, match='context'):
        crop_box(img, BoxFrame(5, 5, 3, 3, 0), 8, context=-1)
    with pytest.raises(ValueError, match='border'):
        crop_box(img, BoxFrame(5, 5, 3, 3, 0), 8, border='wrap')
