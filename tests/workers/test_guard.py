"""The guard re-checks every output with the face detector and never lets a visible face through:
re-redacting (solid fill for a weak region, normal redaction for a miss) or failing, per policy."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from numpy.typing import NDArray
from skimage.metrics import structural_similarity

from schemas.policy import GuardParams, Policy
from workers.detectors.base import Detection, Detector
from workers.guard import GuardFailure, check, enforce
from workers.image_pipeline import redact_image_bytes
from workers.redaction import redact

FACE = (175.0, 55.0, 275.0, 185.0)
MOUTH_ONLY = (175.0, 150.0, 275.0, 185.0)  # a detection that covers the chin, not the eyes


def _policy(**guard: object) -> Policy:
    return Policy(name="guarded", raw_retention_s=60, guard=GuardParams(**guard))  # type: ignore[arg-type]


def _face_ssim(a: NDArray[np.uint8], b: NDArray[np.uint8]) -> float:
    x1, y1, x2, y2 = (int(v) for v in FACE)
    return float(structural_similarity(cv2.cvtColor(a[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY),
                                       cv2.cvtColor(b[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY),
                                       win_size=7, data_range=255))


def test_a_missed_face_is_found_and_redacted(detector: Detector,
                                             astronaut: NDArray[np.uint8]) -> None:
    # given an "output" in which nothing was redacted
    findings = check(astronaut, [], detector, 0.5)
    assert [f.kind for f in findings] == ["miss"]
    # when the guard enforces a re-redacting policy
    out, added, report = enforce(astronaut.copy(), [], detector, _policy())
    # then the face is destroyed, recorded as a detection, and the output checks clean
    assert _face_ssim(astronaut, out) < 0.6
    assert len(added) == 1 and added[0].cls == "face"
    assert report.action == "reredacted" and report.checks == 2 and not report.remaining
    assert report.to_json()["miss"] == 1 and report.seconds > 0
    assert check(out, added, detector, 0.5) == []


def test_a_weak_redaction_is_filled_solid(detector: Detector,
                                          astronaut: NDArray[np.uint8]) -> None:
    # given an output where only the chin was redacted: the face is still found, near it
    partial = [Detection("face", 0.9, MOUTH_ONLY)]
    weak = redact(astronaut, partial, _policy().redaction)
    assert [f.kind for f in check(weak, partial, detector, 0.5)] == ["weak"]
    # when the guard enforces, then the region is filled (policy fill colour, black) and clean
    out, added, report = enforce(weak, partial, detector, _policy())
    assert added == [] and report.action == "reredacted"
    assert out[120, 225].tolist() == [0, 0, 0]  # between the eyes
    assert _face_ssim(astronaut, out) < 0.6
    assert check(out, partial, detector, 0.5) == []


def test_a_fail_policy_refuses_to_publish(detector: Detector,
                                          astronaut: NDArray[np.uint8]) -> None:
    with pytest.raises(GuardFailure, match=r"face is still visible.*policy guarded "
                                            r"on_failure=fail"):
        enforce(astronaut.copy(), [], detector, _policy(on_failure="fail"))


def test_a_good_redaction_passes_and_an_off_guard_does_nothing(
        detector: Detector, astronaut: NDArray[np.uint8]) -> None:
    policy = _policy()
    faces = [d for d in detector.detect(astronaut) if d.score > 0.5]
    out = redact(astronaut, faces, policy.redaction)
    same, added, report = enforce(out, faces, detector, policy)
    assert report.action == "passed" and report.checks == 1 and added == []
    assert same is out
    _, _, off = enforce(astronaut, [], detector, _policy(enabled=False))
    plates_only = Policy(name="plates", raw_retention_s=60, classes=["plate"])
    _, _, no_faces = enforce(astronaut, [], detector, plates_only)
    assert off.action == no_faces.action == "skipped"


def test_the_image_pipeline_records_the_guard_and_its_cost(
        detector: Detector, astronaut: NDArray[np.uint8]) -> None:
    source = bytes(cv2.imencode(".png", astronaut)[1])
    result = redact_image_bytes(source, _policy(), detector, 80_000_000)
    assert result.guard is not None and result.guard.action in ("passed", "reredacted")
    assert result.params["guard"]["threshold"] == 0.5
    assert result.params["guard"]["checks"] >= 1
    assert result.timings["guard_s"] > 0
    out = cv2.imdecode(np.frombuffer(result.data, np.uint8), cv2.IMREAD_COLOR)
    assert check(np.asarray(out, np.uint8), result.detections, detector, 0.5) == []
