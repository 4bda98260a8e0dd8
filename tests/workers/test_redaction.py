"""Redaction destroys the face inside the (enlarged) box and leaves the rest alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage.metrics import structural_similarity

from schemas.policy import RedactionParams
from workers.detectors.base import Detection
from workers.redaction import enlarge_box, redact

FACE = (175.0, 55.0, 275.0, 185.0)  # the astronaut's face


def _ssim(a: NDArray[np.uint8], b: NDArray[np.uint8], box: tuple[float, ...]) -> float:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    gray_a = cv2.cvtColor(a[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    gray_b = cv2.cvtColor(b[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    return float(structural_similarity(gray_a, gray_b, win_size=7, data_range=255))


@pytest.mark.parametrize("method", ["blur", "fill", "pixelate"])
@pytest.mark.parametrize("mask", ["box", "ellipse"])
def test_face_is_destroyed(astronaut: NDArray[np.uint8], method: str, mask: str) -> None:
    params = RedactionParams(method=method, mask=mask)  # type: ignore[arg-type]
    out = redact(astronaut, [Detection("face", 0.9, FACE)], params)
    assert _ssim(astronaut, out, FACE) < 0.6


@pytest.mark.parametrize("height", [10, 14, 24])
def test_tiny_faces_are_destroyed_by_blur(astronaut: NDArray[np.uint8], height: int) -> None:
    """A face of ``height`` pixels (the astronaut scaled down) loses its structure too."""
    factor = height / (FACE[3] - FACE[1])
    small = np.asarray(cv2.resize(astronaut, None, fx=factor, fy=factor,
                                  interpolation=cv2.INTER_AREA), np.uint8)
    x1, y1, x2, y2 = FACE
    box = (x1 * factor, y1 * factor, x2 * factor, y2 * factor)
    out = redact(small, [Detection("face", 0.9, box)], RedactionParams())
    assert _ssim(small, out, box) < 0.6


def test_outside_the_enlarged_box_is_untouched(astronaut: NDArray[np.uint8]) -> None:
    params = RedactionParams(box_scale=1.3)
    out = redact(astronaut, [Detection("face", 0.9, FACE)], params)
    x1, y1, x2, y2 = enlarge_box(FACE, 1.3, 512, 512)
    changed = np.any(out != astronaut, axis=2)
    assert changed[y1:y2, x1:x2].mean() > 0.9
    changed[y1:y2, x1:x2] = False
    assert not changed.any()


def test_input_frame_is_not_modified(astronaut: NDArray[np.uint8]) -> None:
    before = astronaut.copy()
    out = redact(astronaut, [Detection("face", 0.9, FACE)], RedactionParams())
    assert out is not astronaut
    np.testing.assert_array_equal(astronaut, before)


def test_fill_colour_is_rgb_and_ellipse_spares_the_corners() -> None:
    frame = np.full((100, 100, 3), 200, np.uint8)
    params = RedactionParams(method="fill", mask="ellipse", box_scale=1.0, fill_color=(255, 0, 0))
    out = redact(frame, [Detection("face", 0.9, (20, 20, 80, 80))], params)
    assert out[50, 50].tolist() == [0, 0, 255]  # BGR of pure red
    assert out[21, 21].tolist() == [200, 200, 200]  # corner of the box, outside the ellipse


def test_enlarge_box_scales_around_centre_and_clips() -> None:
    assert enlarge_box((40, 40, 60, 60), 1.5, 100, 100) == (35, 35, 65, 65)
    assert enlarge_box((0, 0, 20, 10), 2.0, 25, 100) == (0, 0, 25, 15)


def test_no_detections_returns_an_equal_copy(astronaut: NDArray[np.uint8]) -> None:
    out = redact(astronaut, [], RedactionParams())
    assert out is not astronaut
    np.testing.assert_array_equal(out, astronaut)


def test_each_class_gets_its_own_method_and_box() -> None:
    """A policy can fill plates with a larger box while blurring faces."""
    from schemas.policy import ClassRedaction

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    params = RedactionParams(method="blur", box_scale=1.0, per_class={
        "plate": ClassRedaction(method="fill", box_scale=1.5, fill_color=(0, 255, 0))})
    face, plate = (20.0, 20.0, 80.0, 80.0), (180.0, 100.0, 260.0, 120.0)
    out = redact(frame, [Detection("face", 0.9, face), Detection("plate", 0.8, plate)], params)
    # the plate, grown 1.5x around its centre (160-280, 95-125), is solid green (BGR)
    assert (out[95:125, 160:280] == (0, 255, 0)).all()
    assert not (out[94, 160:280] == (0, 255, 0)).all(axis=1).any()
    # the face is blurred, not filled, and only within its own (unscaled) box
    assert len(np.unique(out[20:80, 20:80].reshape(-1, 3), axis=0)) > 50
    assert _ssim(frame, out, face) < 0.6
    np.testing.assert_array_equal(out[:, 85:150], frame[:, 85:150])
    assert params.for_class("plate").method == "fill"
    assert params.for_class("face").box_scale == 1.0 and params.for_class("face").per_class == {}
    assert not params.weak
    assert RedactionParams(per_class={"text": ClassRedaction(method="pixelate")}).weak
