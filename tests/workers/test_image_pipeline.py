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
from workers.detectors.registry import build_detector, parse_detector_config
from workers.image_pipeline import redact_image_bytes
from workers.imageio import BadInputError

FACE = (175, 55, 275, 185)
LIMIT = 80_000_000


@pytest.fixture(scope="module")
def detector() -> Detector:
    return build_detector(parse_detector_config({"type": "centerface"}),
                          ModelSettings(provider="cpu"))


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy(name="test", raw_retention_s=86400)


@pytest.fixture(scope="module")
def astronaut() -> NDArray[np.uint8]:
    return np.asarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))


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


def test_png_in_png_out_and_policy_classes_filter(detector: Detector,
                                                  astronaut: NDArray[np.uint8]) -> None:
    plates_only = Policy(name="plates", raw_retention_s=86400, classes=["plate"])
    source = bytes(cv2.imencode(".png", astronaut)[1])
    result = redact_image_bytes(source, plates_only, detector, LIMIT)
    assert (result.ext, result.content_type, result.detections) == ("png", "image/png", [])
    out = cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(out, astronaut)  # no face class asked for: lossless, untouched


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
