"""Make detected regions unrecognisable: the redact stage.

Every method works on the detection box enlarged by ``box_scale`` around its centre (detectors
draw tight boxes; hair, ears and a misplaced box edge still identify people) and clipped to the
frame. Strength does not depend on the face size: blur and mosaic are computed on a canonical
grid of a few cells per box, so a 10-pixel face and a 1000-pixel face lose their identity alike,
and large boxes cost no more than small ones.

* ``blur``: Gaussian blur on the box shrunk to ``_BLUR_GRID`` pixels, scaled back up smoothly.
* ``fill``: solid ``fill_color``, given as RGB like any colour a person writes in a policy.
* ``pixelate``: mosaic of cells at least ``_MIN_CELL_PX`` wide. Weak: learned models can partly
  reverse mosaics, so policies flag it.
* mask ``ellipse`` restricts any method to the ellipse inscribed in the enlarged box.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from numpy.typing import NDArray

from schemas.policy import RedactionParams
from workers.detectors.base import Detection

Frame = NDArray[np.uint8]

_BLUR_GRID = 16  # the box's long side is shrunk to this many pixels before blurring
_BLUR_SIGMA = 3.0  # in grid pixels: about a fifth of the box, so features merge into skin tone
# The Gaussian kernel cv2.GaussianBlur(sigma=_BLUR_SIGMA) builds for 8-bit images (size
# round(6 sigma + 1), odd), made once: applying it with sepFilter2D costs 7 us per box against
# GaussianBlur's 32 us, which rebuilds it on every call (results differ by at most 1 level).
_BLUR_KERNEL = cv2.getGaussianKernel(round(6 * _BLUR_SIGMA + 1) | 1, _BLUR_SIGMA)
_MOSAIC_CELLS = 8  # cells across the long side of a box
_MIN_CELL_PX = 4


def redact(frame: Frame, detections: Sequence[Detection], params: RedactionParams,
           inplace: bool = False) -> Frame:
    """A redacted copy of ``frame`` (BGR); the input is left untouched unless ``inplace``.

    Each detection is redacted with the parameters of its class (``params.per_class``).
    ``inplace`` redacts ``frame`` itself and returns it: an image at the pixel limit is 240 MB,
    and a copy of it is the difference between fitting the memory bound and not.
    """
    out = frame if inplace else frame.copy()
    height, width = frame.shape[:2]
    per_class: dict[str, RedactionParams] = {}
    for detection in detections:
        if detection.cls not in per_class:
            per_class[detection.cls] = params.for_class(detection.cls)
        chosen = per_class[detection.cls]
        x1, y1, x2, y2 = enlarge_box(detection.box, chosen.box_scale, width, height)
        if x2 <= x1 or y2 <= y1:
            continue
        roi = out[y1:y2, x1:x2]
        replaced = _METHODS[chosen.method](roi, chosen)
        if chosen.mask == "ellipse":
            inside = ellipse_mask(y2 - y1, x2 - x1)
            roi[inside] = replaced[inside]
        else:
            roi[...] = replaced
    return out


def enlarge_box(box: tuple[float, float, float, float], scale: float, width: int,
                height: int) -> tuple[int, int, int, int]:
    """Integer corners of ``box`` scaled around its centre, rounded outwards, clipped."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half_w, half_h = (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    return (
        max(0, math.floor(cx - half_w)),
        max(0, math.floor(cy - half_h)),
        min(width, math.ceil(cx + half_w)),
        min(height, math.ceil(cy + half_h)),
    )


def redacted_region(detection: Detection, params: RedactionParams, width: int, height: int,
                    grow: float = 1.0) -> tuple[int, int, int, int]:
    """The region :func:`redact` covers for ``detection`` (its box grown by its class's
    ``box_scale``), grown ``grow`` times more."""
    return enlarge_box(detection.box, params.for_class(detection.cls).box_scale * grow, width,
                       height)


def ellipse_mask(height: int, width: int) -> NDArray[np.bool_]:
    ys, xs = np.ogrid[:height, :width]
    ny = (ys + 0.5 - height / 2) / (height / 2)
    nx = (xs + 0.5 - width / 2) / (width / 2)
    return np.asarray(nx * nx + ny * ny <= 1.0)


def _blur(roi: Frame, params: RedactionParams) -> Frame:
    height, width = roi.shape[:2]
    factor = _BLUR_GRID / max(height, width)
    small_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = cv2.resize(roi, small_size, interpolation=cv2.INTER_AREA)
    small = cv2.sepFilter2D(small, -1, _BLUR_KERNEL, _BLUR_KERNEL, borderType=cv2.BORDER_REFLECT)
    return np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR))


def _fill(roi: Frame, params: RedactionParams) -> Frame:
    red, green, blue = params.fill_color
    return np.full_like(roi, (blue, green, red))


def _pixelate(roi: Frame, params: RedactionParams) -> Frame:
    height, width = roi.shape[:2]
    cell = max(_MIN_CELL_PX, max(height, width) / _MOSAIC_CELLS)
    cells = (max(1, round(width / cell)), max(1, round(height / cell)))
    small = cv2.resize(roi, cells, interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST))


_METHODS: dict[str, Callable[[Frame, RedactionParams], Frame]] = {
    "blur": _blur,
    "fill": _fill,
    "pixelate": _pixelate,
}
