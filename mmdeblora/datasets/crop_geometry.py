"""Upright crops of rotated boxes: the geometry behind ``DOTACropDataset``.

A DOTA box is a quadrilateral ``x1 y1 ... x4 y4`` whose first edge (point 1 -> point 2)
runs along the object's length; the crop rotates the image into that frame, so the object
lies with its first edge horizontal, and adds a context margin around it. Coordinates use
OpenCV's convention (pixel centres at integers), the one cv2 draws and warps with.
"""
import math
from typing import NamedTuple, Sequence, Tuple, Union

import cv2
import numpy as np

Size = Union[int, Tuple[int, int]]


class BoxFrame(NamedTuple):
    """Centre, extent along the box's own axes (w along the first edge) and the angle
    (radians, image coordinates) of the first edge."""
    cx: float
    cy: float
    w: float
    h: float
    angle: float


def quad_to_frame(quad: Sequence[float]) -> BoxFrame:
    """The box frame of a DOTA quadrilateral.

    Centre and size come from ``cv2.minAreaRect`` (DOTA has a few non-rectangular quads);
    the rectangle axis closest to the first edge becomes ``w``, oriented from point 1 to
    point 2, so a crop shows the object as the annotator's point order defines it.
    """
    pts = np.asarray(quad, dtype=np.float32).reshape(4, 2)
    (cx, cy), (rw, rh), deg = cv2.minAreaRect(pts)
    t = math.radians(deg)
    u = np.array([math.cos(t), math.sin(t)])
    v = np.array([-math.sin(t), math.cos(t)])
    edge = (pts[1] - pts[0]).astype(np.float64)
    if abs(edge @ v) > abs(edge @ u):
        u, v, rw, rh = v, -u, rh, rw
    if edge @ u < 0:
        u = -u
    return BoxFrame(float(cx), float(cy), float(rw), float(rh),
                    math.atan2(float(u[1]), float(u[0])))


def _size(size: Size) -> Tuple[int, int]:
    w, h = (size, size) if isinstance(size, int) else tuple(size)
    if w < 1 or h < 1:
        raise ValueError(f'crop size must be positive, got {size!r}')
    return int(w), int(h)


def crop_region(frame: BoxFrame, context: float = 0.0,
                keep_ratio: bool = False) -> Tuple[float, float]:
    """Extent (along the box axes) of the cropped region: the box plus ``context`` times
    its side on each side; ``keep_ratio`` widens the short side to a square."""
    if context < 0:
        raise ValueError(f'context must be >= 0, got {context}')
    rw, rh = frame.w * (1 + 2 * context), frame.h * (1 + 2 * context)
    if keep_ratio:
        rw = rh = max(rw, rh)
    return rw, rh


def crop_box(img: np.ndarray, frame: BoxFrame, size: Size, context: float = 0.0,
             keep_ratio: bool = False, border: str = 'replicate') -> np.ndarray:
    """Cut the region around ``frame`` out of ``img``, upright, resized to ``size``.

    ``size`` is ``(width, height)`` or one int. Large downscales go through an
    intermediate warp near the object's own resolution and an area resize (a direct
    bilinear warp would alias); ``border`` fills what lies outside the image
    (``'replicate'`` or ``'constant'``, black).
    """
    out_w, out_h = _size(size)
    rw, rh = crop_region(frame, context, keep_ratio)
    if not (rw > 0 and rh > 0):
        raise ValueError(f'degenerate box {frame}')
    mid_w = max(out_w, min(int(math.ceil(rw)), 4 * out_w))
    mid_h = max(out_h, min(int(math.ceil(rh)), 4 * out_h))
    c, s = math.cos(frame.angle), math.sin(frame.angle)
    u, v = np.array([c, s]) * rw / 2, np.array([-s, c]) * rh / 2
    centre = np.array([frame.cx, frame.cy])
    src = np.stack([centre - u - v, centre + u - v, centre - u + v]).astype(np.float32)
    dst = np.array([[-0.5, -0.5], [mid_w - 0.5, -0.5], [-0.5, mid_h - 0.5]], np.float32)
    matrix = cv2.getAffineTransform(src, dst)
    modes = dict(replicate=cv2.BORDER_REPLICATE, constant=cv2.BORDER_CONSTANT)
    if border not in modes:
        raise ValueError(f"border must be one of {sorted(modes)}, got {border!r}")
    out = cv2.warpAffine(img, matrix, (mid_w, mid_h), flags=cv2.INTER_LINEAR,
                         borderMode=modes[border], borderValue=0)
    if (mid_w, mid_h) != (out_w, out_h):
        out = cv2.resize(out, (out_w, out_h), interpolation=cv2.INTER_AREA)
    return out
