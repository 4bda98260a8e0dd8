"""The plate-and-text detector (PP-OCRv4 from the rapidocr wheel) on plates and signs drawn at
test time, and its DB post-processing on probability maps whose answer is known."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray

from infra.settings import ModelSettings
from workers.detectors.base import Detector
from workers.detectors.multi import MultiDetector
from workers.detectors.registry import build_configured_detector, build_detector
from workers.detectors.text import TextConfig, TextDetector, merge_lines, regions

PLATE = (220, 300, 420, 350)  # x1, y1, x2, y2 of the drawn plate
SIGN = (40, 60, 600, 100)


PLATE_TEXT = ("AB 123 CD", 0.95)
SIGN_TEXT = ("NO PARKING ON THIS STREET AT ANY TIME", 0.7)


def _put(frame: NDArray[np.uint8], text: tuple[str, float], x: int, baseline: int,
         colour: tuple[int, int, int]) -> tuple[int, int, int, int]:
    """Draw ``text`` and return the box its letters occupy."""
    (width, height), _ = cv2.getTextSize(text[0], cv2.FONT_HERSHEY_SIMPLEX, text[1], 2)
    cv2.putText(frame, text[0], (x, baseline), cv2.FONT_HERSHEY_SIMPLEX, text[1], colour, 2,
                cv2.LINE_AA)
    return (x, baseline - height, x + width, baseline)


def _street(seed: int = 0) -> tuple[NDArray[np.uint8], dict[str, tuple[int, int, int, int]]]:
    """A grey, noisy 'street' with a white plate reading AB 123 CD and a long sign; returns the
    frame and where the letters of each are."""
    rng = np.random.default_rng(seed)
    frame = rng.normal(110, 12, (480, 640, 3)).clip(0, 255).astype(np.uint8)
    x1, y1, x2, y2 = PLATE
    cv2.rectangle(frame, (x1, y1), (x2, y2), (245, 245, 245), -1)
    cv2.rectangle(frame, (x1, y1), (x2, y2), (20, 20, 20), 2)
    plate = _put(frame, PLATE_TEXT, x1 + 12, y2 - 14, (15, 15, 15))
    sx1, sy1, sx2, sy2 = SIGN
    cv2.rectangle(frame, (sx1, sy1), (sx2, sy2), (40, 90, 30), -1)
    sign = _put(frame, SIGN_TEXT, sx1 + 8, sy2 - 12, (250, 250, 250))
    return frame, {"plate": plate, "sign": sign}


def _inside(box: tuple[float, ...], region: tuple[float, ...], share: float = 0.6) -> bool:
    """At least ``share`` of ``region`` is covered by ``box``."""
    w = max(0.0, min(box[2], region[2]) - max(box[0], region[0]))
    h = max(0.0, min(box[3], region[3]) - max(box[1], region[1]))
    return w * h >= share * (region[2] - region[0]) * (region[3] - region[1])


@pytest.fixture(scope="module")
def detector() -> Detector:
    return build_detector(TextConfig(), ModelSettings(provider="cpu"))


def test_a_plate_is_found_as_plate_and_a_long_sign_as_text(detector: Detector) -> None:
    frame, letters = _street()
    found = detector.detect(frame)
    plates = [d for d in found if d.cls == "plate"]
    texts = [d for d in found if d.cls == "text"]
    assert any(_inside(p.box, letters["plate"], 0.8) and p.score >= 0.5 for p in plates), found
    assert any(_inside(t.box, letters["sign"], 0.8) for t in texts), found
    assert not any(_inside(p.box, letters["sign"], 0.2) for p in plates)


def test_no_text_no_detections(detector: Detector) -> None:
    rng = np.random.default_rng(1)
    frame = rng.normal(110, 12, (360, 480, 3)).clip(0, 255).astype(np.uint8)
    assert detector.detect(frame) == []


def test_input_is_scaled_to_multiples_of_32_within_the_limits() -> None:
    detector = TextDetector(TextConfig(min_short_side=736, max_long_side=1600),
                            ModelSettings(provider="cpu"))
    assert detector.input_size(300, 400) == (736, 992)  # small: short side up to 736
    assert detector.input_size(3000, 4000) == (1216, 1600)  # large: long side down to 1600
    assert detector.input_size(20, 4000) == (32, 1600)


def test_regions_box_and_unclip_a_text_kernel() -> None:
    prob = np.zeros((100, 200), np.float32)
    prob[40:50, 50:150] = 0.9  # a shrunk text kernel, 100 x 10
    prob[80:82, 10:12] = 0.9  # too thin: noise
    prob[5:15, 5:15] = 0.35  # above the binarisation threshold, below the box threshold
    config = TextConfig()
    boxes = regions(prob, config)
    assert len(boxes) == 1
    x1, y1, x2, y2, score = boxes[0].tolist()
    # unclip distance = area * ratio / perimeter = (101 * 11 * 1.6) / (2 * 112), about 7.9 px
    assert (x1, y1, x2, y2) == pytest.approx((42, 32, 158, 58), abs=1.5)
    assert 0.75 < score <= 0.9  # the mean over the (dilated) rectangle


def test_words_of_a_line_and_stacked_lines_merge_but_distant_text_does_not() -> None:
    boxes = np.array([
        [100, 100, 160, 130, 0.9],  # "AB"
        [168, 101, 250, 131, 0.8],  # "123 CD", 8 px to the right on the same line
        [120, 84, 230, 98, 0.6],  # a small line just above (a two-line plate)
        [400, 100, 460, 130, 0.7],  # far to the right: another plate
    ], np.float32)
    merged = merge_lines(boxes, TextConfig())
    assert len(merged) == 2
    first = min(merged.tolist(), key=lambda b: b[0])
    assert first == pytest.approx([100, 84, 250, 131, 0.9])


def test_a_configured_path_is_used_and_versioned(tmp_path: object) -> None:
    from pathlib import Path

    from workers.detectors.text import default_model_path

    copy = Path(str(tmp_path)) / "det.onnx"
    copy.write_bytes(default_model_path().read_bytes())
    detector = TextDetector(TextConfig(), ModelSettings(provider="cpu", text_path=copy))
    assert detector.path == copy
    assert detector.model_version.startswith("ppocrv4-det-")
    missing = ModelSettings(provider="cpu", text_path=Path(str(tmp_path)) / "nope.onnx")
    with pytest.raises(FileNotFoundError):
        TextDetector(TextConfig(), missing).detect(_street()[0])


def test_configured_detectors_are_pooled_and_skipped_by_class() -> None:
    models = ModelSettings(provider="cpu", detectors=["centerface", "text"],
                           detector_options={"text": {"box_threshold": 0.6}})
    detector = build_configured_detector(models)
    assert detector.classes == {"face", "plate", "text"}
    assert detector.params["detectors"][1]["box_threshold"] == 0.6
    assert "+ppocrv4-det-" in detector.model_version
    frame, _ = _street()
    plates = detector.detect_batch([frame], classes={"plate"})[0]
    assert plates and {d.cls for d in plates} == {"plate"}
    assert isinstance(detector, MultiDetector)
    assert set(detector.last_timings) == {"text"}  # centerface did not run
    faces = detector.detect_batch([frame], classes={"face"})[0]
    assert all(d.cls == "face" for d in faces)
    assert set(detector.last_timings) == {"centerface"}
    with pytest.raises(ValueError, match="empty"):
        build_configured_detector(ModelSettings(detectors=[]))
