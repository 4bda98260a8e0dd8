"""One image through every stage: decode, detect, redact, guard, encode.

The single plain function behind both the Celery image task and the in-process ``veil redact``;
it touches no service. It fails closed: any error raises, and nothing is returned that did not
go through detection and redaction. :class:`~workers.imageio.BadInputError` means the input is at
fault and retrying is pointless.

Memory: the decoded frame is redacted in place (no second full-size copy) and the detectors see
it through scaled copies or tiles, so an image at the pixel limit stays within the memory bound
(docs/limits.md). Frame sequences (multi-page TIFF, animated WebP, GIF) go through every frame
and keep their kind (:func:`redact_frames_bytes`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from schemas.policy import Policy
from workers import image_frames
from workers.detectors.base import Detection, Detector
from workers.guard import GuardReport, enforce
from workers.imageio import BadInputError, decode_image, encode_image, sniff_image_format
from workers.redaction import redact
from workers.reliability import PermanentJobError

CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png", **image_frames.CONTENT_TYPES}
Frame = NDArray[np.uint8]


class MissingDetectorError(PermanentJobError):
    """The policy redacts a class that no configured detector reports: refuse, never skip."""


@dataclass
class ImageResult:
    data: bytes
    ext: str
    content_type: str
    width: int
    height: int
    detections: list[Detection]
    model_version: str
    params: dict[str, Any]  # detector, redaction, encoder and guard settings, for the ledger
    guard: GuardReport | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage and detector
    frames: int = 1
    detection_frames: list[int] = field(default_factory=list)  # frame of each detection

    def frame_of(self, index: int) -> int:
        """The frame (page) index of ``detections[index]``: 0 for a still."""
        return self.detection_frames[index] if self.detection_frames else 0


def detect_frames(frames: Sequence[NDArray[np.uint8]], policy: Policy,
                  detector: Detector) -> list[list[Detection]]:
    """Detections per frame (BGR), limited to the classes the policy redacts. Used for images
    and for every video frame, so both follow one rule.

    Fails closed: a policy class that the detector cannot report raises
    :class:`MissingDetectorError`. Detections whose score is in the policy's review band for
    their class come back with ``uncertain=True`` (redacted all the same; `veil review` lists
    them for a person to look at).
    """
    wanted = set(policy.classes)
    missing = wanted - detector.classes
    if missing:
        raise MissingDetectorError(
            f"policy {policy.name!r} redacts {', '.join(sorted(missing))} but the configured "
            f"detectors ({detector.key}) report only {', '.join(sorted(detector.classes))}; "
            "enable a detector for it (VEIL_MODELS__DETECTORS)")
    return [[_flag(d, policy) for d in dets]
            for dets in detector.detect_batch(frames, classes=wanted)]


def _flag(detection: Detection, policy: Policy) -> Detection:
    band = policy.review.get(detection.cls)  # type: ignore[call-overload]
    if band is not None and band.low <= detection.score < band.high:
        return replace(detection, uncertain=True)
    return detection


def redact_frame(frame: NDArray[np.uint8], detections: Sequence[Detection],
                 policy: Policy, inplace: bool = False) -> NDArray[np.uint8]:
    """The frame with every detection destroyed as the policy says (a new array unless
    ``inplace``); each class with its own method, mask and box scale where the policy sets
    them (``per_class``)."""
    return redact(frame, list(detections), policy.redaction, inplace=inplace)


def redact_image_bytes(data: bytes, policy: Policy, detector: Detector, max_pixels: int,
                       guard: bool = True) -> ImageResult:
    """Decode, detect, redact, guard, encode. ``guard=False`` only for measuring without it."""
    if not data:
        raise BadInputError("the file is empty (0 bytes)")
    fmt = sniff_image_format(data)
    if image_frames.is_sequence(data, fmt):
        assert fmt is not None
        return redact_frames_bytes(data, fmt, policy, detector, max_pixels, guard)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    image = decode_image(data, max_pixels)
    timings["decode_s"] = time.perf_counter() - started
    t = time.perf_counter()
    detections = detect_frames([image.frame], policy, detector)[0]
    timings["detect_s"] = time.perf_counter() - t
    for key, seconds in getattr(detector, "last_timings", {}).items():
        timings[f"detect_{key}_s"] = seconds
    t = time.perf_counter()
    redacted = redact_frame(image.frame, detections, policy, inplace=True)
    timings["redact_s"] = time.perf_counter() - t
    report = None
    view = _PublishedView(image.format, policy.jpeg_quality)
    if guard:
        redacted, added, report = enforce(redacted, detections, detector, policy, view)
        detections = detections + added
        timings["guard_s"] = report.seconds
    t = time.perf_counter()
    encoded, ext = view.encoded(redacted)
    timings["encode_s"] = time.perf_counter() - t
    params = _params(detector, policy, ext, report)
    return ImageResult(
        data=encoded,
        ext=ext,
        content_type=CONTENT_TYPES[ext],
        width=image.width,
        height=image.height,
        detections=detections,
        model_version=detector.model_version,
        params=params,
        guard=report,
        timings=timings,
    )


def _params(detector: Detector, policy: Policy, ext: str, report: GuardReport | None,
            frames: int = 1) -> dict[str, Any]:
    """Detector, redaction, encoder and guard settings, for the ledger."""
    encoder: dict[str, Any] = {"format": ext}
    if ext == "jpg":
        encoder["jpeg_quality"] = policy.jpeg_quality
    if frames > 1 or ext in image_frames.CONTENT_TYPES:
        encoder["frames"] = frames
    params: dict[str, Any] = {
        "detector": {"key": detector.key, **detector.params},
        "redaction": policy.redaction.model_dump(mode="json"),
        "encoder": encoder,
    }
    if report is not None:
        params["guard"] = report.to_json()
    return params


def redact_frames_bytes(data: bytes, fmt: str, policy: Policy, detector: Detector,
                        max_pixels: int, guard: bool = True) -> ImageResult:
    """Every page or frame of a TIFF, WebP or GIF detected, redacted in place, guarded and
    re-encoded in kind: all of them, or an error (a face on page 2 is no less a face)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    decoded = image_frames.decode_frames(data, fmt, max_pixels)
    timings["decode_s"] = time.perf_counter() - started
    t = time.perf_counter()
    found = detect_frames(decoded.frames, policy, detector)
    timings["detect_s"] = time.perf_counter() - t
    for frame, detections in zip(decoded.frames, found, strict=True):
        redact_frame(frame, detections, policy, inplace=True)
    out: list[Any] = list(decoded.frames)
    if fmt == "gif":  # the guard checks the 256-colour frames that are published
        out = image_frames.gif_frames(decoded.frames)
        decoded.frames.clear()
    reports: list[GuardReport] = []
    if guard:
        for index, frame in enumerate(out):
            pixels = image_frames.published(frame) if fmt == "gif" else frame
            checked, added, report = enforce(pixels, found[index], detector, policy)
            if checked is not pixels:  # re-redacted: keep what the guard passed
                out[index] = image_frames.gif_frames([checked])[0] if fmt == "gif" else checked
            found[index] = found[index] + added
            reports.append(report)
    t = time.perf_counter()
    encoded, ext = image_frames.encode_frames(out, decoded)
    timings["encode_s"] = time.perf_counter() - t
    merged = _merge_reports(reports) if guard else None
    if merged is not None:
        timings["guard_s"] = merged.seconds
    height, width = (out[0].height, out[0].width) if fmt == "gif" else out[0].shape[:2]
    return ImageResult(
        data=encoded, ext=ext, content_type=CONTENT_TYPES[ext], width=int(width),
        height=int(height), detections=[d for dets in found for d in dets],
        model_version=detector.model_version,
        params=_params(detector, policy, ext, merged, frames=len(out)), guard=merged,
        timings=timings, frames=len(out),
        detection_frames=[i for i, dets in enumerate(found) for _ in dets])


def _merge_reports(reports: Sequence[GuardReport]) -> GuardReport:
    """One report for all frames: the strongest action any frame needed, every finding."""
    order = ("skipped", "passed", "reredacted", "failed")
    merged = GuardReport(max((r.action for r in reports), key=order.index, default="skipped"))
    for report in reports:
        merged.threshold = max(merged.threshold, report.threshold)
        merged.checks += report.checks
        merged.found += report.found
        merged.remaining += report.remaining
        merged.seconds += report.seconds
    return merged


class _PublishedView:
    """The frame as the published file will decode: the guard checks that, not the array.

    It remembers the bytes of the last frame it encoded, so the frame the guard passed is not
    encoded a second time for publishing (for a JPEG of 12 MP that is tens of milliseconds).
    """

    def __init__(self, fmt: str, jpeg_quality: int) -> None:
        self.fmt, self.jpeg_quality = fmt, jpeg_quality
        self._last: tuple[Frame, bytes, str] | None = None

    def encoded(self, frame: Frame) -> tuple[bytes, str]:
        """The file bytes of ``frame`` and their extension."""
        if self._last is None or self._last[0] is not frame:
            data, ext = encode_image(frame, self.fmt, self.jpeg_quality)
            self._last = (frame, data, ext)
        return self._last[1], self._last[2]

    def __call__(self, frame: Frame) -> Frame:
        data, ext = self.encoded(frame)
        if ext != "jpg":
            return frame  # PNG is lossless: what is in memory is what is published
        return np.asarray(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), np.uint8)
