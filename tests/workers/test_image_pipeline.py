"""One image through decode, detect, redact and encode; and ``veil redact`` on local files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage import data
from skimage.metrics import structural_similarity

from infra.settings import ModelSettings
from producer.redact_local import count_inputs, redact_files
from schemas.policy import Policy
from workers.detectors.base import Detector
from workers.detectors.registry import (
    build_configured_detector,
)
from workers.image_pipeline import MissingDetectorError, detect_frames, redact_image_bytes
from workers.imageio import BadInputError

FACE = (175, 55, 275, 185)
LIMIT = 80_000_000


@pytest.fixture(scope="module")
def pooled() -> Detector:
    """Every detector the default configuration enables (faces, plates and text)."""
    return build_configured_detector(ModelSettings(provider="cpu"))


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(name="test", raw_retention_s=86400)


def _face_ssim(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    x1, y1, x2, y2 = FACE
    return float(structural_similarity(cv2.cvtColor(a[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY),
                                       cv2.cvtColor(b[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY),
                                       win_size=7, data_range=255))


def test_jpeg_in_redacted_jpeg_out(detector: Detector, policy: Policy,
                                   astronaut: NDArray[np.uint8]) -> None:
    source = bytes(cv2.imencode(".jpg", astronaut)[1])
    result = redact_image_bytes(source, policy, detector, LIMIT)
    assert (result.ext, result.content_type) == ("jpg", "image/jpeg")
    assert (result.width, result.height) == (512, 512)
    assert sum(d.score > 0.5 for d in result.detections) == 1  # plus faint boxes, see detectors
    assert result.model_version == detector.model_version
    assert result.params["detector"]["threshold"] == detector.params["threshold"]
    assert result.params["redaction"]["method"] == "blur"
    assert result.params["encoder"] == {"format": "jpg", "jpeg_quality": 92}
    out = np.asarray(cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_COLOR))
    assert _face_ssim(astronaut, out) < 0.6


def test_png_in_png_out_and_policy_classes_filter(pooled: Detector,
                                                  astronaut: NDArray[np.uint8]) -> None:
    plates_only = Policy(name="plates", raw_retention_s=86400, classes=["plate"])
    source = bytes(cv2.imencode(".png", astronaut)[1])
    result = redact_image_bytes(source, plates_only, pooled, LIMIT)
    assert (result.ext, result.content_type, result.detections) == ("png", "image/png", [])
    out = cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(out, astronaut)  # no face class asked for: lossless, untouched
    assert result.guard is not None and result.guard.action == "skipped"


def test_a_policy_class_without_a_detector_fails_closed(detector: Detector,
                                                        astronaut: NDArray[np.uint8]) -> None:
    plates = Policy(name="plates", raw_retention_s=86400, classes=["face", "plate"])
    with pytest.raises(MissingDetectorError, match="policy 'plates' redacts plate"):
        detect_frames([astronaut], plates, detector)


def test_faces_and_plates_in_one_image_each_redacted_their_way(pooled: Detector) -> None:
    """The street policy: faces blurred, plates blurred in a larger box; both destroyed."""
    from infra.policies import get_policy

    policy = get_policy("street")
    assert set(policy.classes) == {"face", "plate"}
    frame = np.full((480, 640, 3), 120, np.uint8)
    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)[30:230, 150:300]
    frame[20:220, 40:190] = face
    cv2.rectangle(frame, (300, 350), (520, 405), (245, 245, 245), -1)
    cv2.putText(frame, "KA 482 BX", (312, 392), cv2.FONT_HERSHEY_SIMPLEX, 1.1, (10, 10, 10), 2)
    result = redact_image_bytes(bytes(cv2.imencode(".png", frame)[1]), policy, pooled, LIMIT)
    out = np.asarray(cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_COLOR))
    classes = {d.cls for d in result.detections}
    assert classes == {"face", "plate"}
    gray_in, gray_out = (cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in (frame, out))
    plate_ssim = structural_similarity(gray_in[355:400, 305:515], gray_out[355:400, 305:515],
                                       win_size=7, data_range=255)
    face_ssim = structural_similarity(gray_in[45:155, 65:165], gray_out[45:155, 65:165],
                                      win_size=7, data_range=255)
    assert plate_ssim < 0.6 and face_ssim < 0.6
    assert result.params["detector"]["key"] == "multi"
    assert {"detect_centerface_s", "detect_text_s", "guard_s"} <= set(result.timings)


def test_scores_in_the_review_band_are_flagged_uncertain(detector: Detector,
                                                         astronaut: NDArray[np.uint8]) -> None:
    from schemas.policy import ReviewBand

    strict = Policy(name="review-all", raw_retention_s=60,
                    review={"face": ReviewBand(low=0.0, high=1.0)})
    lenient = Policy(name="review-none", raw_retention_s=60, review={})
    band = Policy(name="band", raw_retention_s=60,
                  review={"face": ReviewBand(low=0.5, high=0.99)})
    assert all(d.uncertain for d in detect_frames([astronaut], strict, detector)[0])
    assert not any(d.uncertain for d in detect_frames([astronaut], lenient, detector)[0])
    flagged = detect_frames([astronaut], band, detector)[0]
    assert [d.uncertain for d in flagged] == [0.5 <= d.score < 0.99 for d in flagged]
    # a band that ends at the best score flags everything below it and not the best itself
    best = max(d.score for d in flagged)
    below = Policy(name="below", raw_retention_s=60,
                   review={"face": ReviewBand(low=0.0, high=best)})
    flagged = detect_frames([astronaut], below, detector)[0]
    assert [d.uncertain for d in flagged] == [d.score < best for d in flagged]
    assert not max(flagged, key=lambda d: d.score).uncertain


def test_bad_input_raises(detector: Detector, policy: Policy) -> None:
    with pytest.raises(BadInputError):
        redact_image_bytes(b"not an image at all", policy, detector, LIMIT)


@pytest.mark.parametrize("processes", [1, 2])
def test_redact_files_names_outputs_and_survives_bad_files(
        tmp_path: Path, policy: Policy, astronaut: NDArray[np.uint8], processes: int) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    jpeg = bytes(cv2.imencode(".jpg", astronaut)[1])
    (inputs / "photo.jpeg").write_bytes(jpeg)
    (inputs / "sub" / "photo.JPG").write_bytes(jpeg)  # same stem: must not overwrite
    (inputs / "sub" / "scan.tif").write_bytes(bytes(cv2.imencode(".tif", astronaut[:64])[1]))
    (inputs / "notes.txt").write_text("not an image")  # skipped inside folders
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg[:200])  # named explicitly: reported as an error
    ticks: list[int] = []
    assert count_inputs([inputs, broken]) == 4
    results = redact_files([inputs, broken], tmp_path / "out", policy, processes=processes,
                           progress=ticks.append)
    assert sum(ticks) == 4
    by_name = {r.path.name: r for r in results}
    assert by_name["broken.jpg"].output is None and "truncated" in str(by_name["broken.jpg"].error)
    outputs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outputs == ["photo-1.jpg", "photo.jpg", "scan.png"]
    assert by_name["photo.jpeg"].faces >= 1 and by_name["photo.jpeg"].error is None
    written = np.asarray(cv2.imread(str(tmp_path / "out" / "photo.jpg")), np.uint8)
    assert _face_ssim(astronaut, written) < 0.6
