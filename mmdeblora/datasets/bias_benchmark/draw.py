"""Drawing in an object's own frame: shared by the source and the target renderers.

``Frame`` maps unit object coordinates (u along the object's length, v across, both in
[-0.5, 0.5]) to image pixels through any 2x3 affine map (a rotated box for the aerial
target, a rotated and sheared view for the source). Colours are BGR tuples; ``hsv`` makes
one from hue (degrees), saturation and value (0-1), the axes the cues are defined on.
"""
import colorsys
import math
from typing import Sequence, Tuple

import cv2
import numpy as np

from ..aerial_scenes import Color

RECT = [(-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5)]
SHIFT = 4  # cv2 sub-pixel bits


def hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb((h % 360) / 360.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


class Frame:
    """Unit object coordinates -> pixels: ``p = centre + A @ (u, v)``."""

    def __init__(self, cx: float, cy: float, matrix: np.ndarray):
        self.centre = np.array([cx, cy], dtype=np.float64)
        self.matrix = np.asarray(matrix, dtype=np.float64).reshape(2, 2)

    @classmethod
    def box(cls, cx: float, cy: float, w: float, h: float, angle: float) -> 'Frame':
        """A rotated w x h box (u along w), the aerial target's frame."""
        c, s = math.cos(angle), math.sin(angle)
        return cls(cx, cy, np.array([[c * w, -s * h], [s * w, c * h]]))

    def pts(self, uv: Sequence[Tuple[float, float]]) -> np.ndarray:
        return self.centre + np.asarray(uv, dtype=np.float64) @ self.matrix.T

    def corners(self) -> np.ndarray:
        return self.pts(RECT)

    def _ipts(self, uv) -> np.ndarray:
        return np.round(self.pts(uv) * (1 << SHIFT)).astype(np.int32)

    def poly(self, img: np.ndarray, uv, color: Color) -> None:
        cv2.fillPoly(img, [self._ipts(uv)], color, cv2.LINE_AA, SHIFT)

    def line(self, img: np.ndarray, a, b, color: Color, t: int = 1) -> None:
        p = self._ipts([a, b])
        cv2.line(img, tuple(map(int, p[0])), tuple(map(int, p[1])), color, t, cv2.LINE_AA,
                 SHIFT)

    def ellipse(self, img: np.ndarray, cu: float, cv: float, ru: float, rv: float,
                color: Color, t: int = -1, n: int = 40) -> None:
        """An ellipse (centre cu, cv; radii ru, rv in unit coordinates) as a polygon, so
        it follows the frame's shear as well as its rotation."""
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        uv = np.stack([cu + ru * np.cos(a), cv + rv * np.sin(a)], 1)
        if t < 0:
            cv2.fillPoly(img, [self._ipts(uv)], color, cv2.LINE_AA, SHIFT)
        else:
            cv2.polylines(img, [self._ipts(uv)], True, color, t, cv2.LINE_AA, SHIFT)
