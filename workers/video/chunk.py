"""One chunk through every stage: decode its range, detect on every frame, track, redact, encode.

The single plain function behind both the Celery chunk task and the in-process ``veil redact``;
it touches no service. It fails closed: any error raises, and the encoded chunk holds only frames
that went through detection and redaction.

Detection runs on every frame in batches through the configured detector (onnxruntime); frames
may be scaled down for detection only (``policy.video_detect_long_side``), boxes are mapped back
to full resolution and the full-resolution frame is redacted.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from infra.settings import VideoSettings
from infra.video_probe import VideoInfo
from schemas.chunks import ChunkPlan
from schemas.policy import Policy
from workers.detectors.base import Detection, Detector
from workers.image_pipeline import detect_frames, redact_frame
from workers.video.decode import DecodedFrame, decode_chunk
from workers.video.encode import ChunkEncoder, encoder_settings
from workers.video.track import MAX_MISSED, Tracker, TrackRecord, iou_matrix

BATCH = 8
FILL_GAP = 3  # frames: a mask gap this short between two sightings is filled
FILL_IOU = 0.3  # overlap that makes boxes on both sides of a gap one region
# Frames before the chunk detected for tracking only: enough history that the tracker's boxes
# at the boundary match the previous chunk's (whose tracks may be coasting or about to be
# filled), so masks stay continuous across chunks too.
WARMUP = 2 * (MAX_MISSED + FILL_GAP)
Progress = Callable[[int, int], None]  # (frames done, frames in the chunk)


@dataclass
class ChunkOutput:
    data: bytes
    frames: int
    detections: int  # raw detector boxes over the chunk's frames
    coasted: int  # boxes redacted from tracking alone
    filled: int  # boxes added to fill short gaps between sightings
    tracks: list[TrackRecord]
    model_version: str
    params: dict[str, Any]
    boxes: list[list[tuple[float, float, float, float]]] = field(default_factory=list)


def detect_scaled(images: Sequence[NDArray[np.uint8]], policy: Policy,
                  detector: Detector) -> list[list[Detection]]:
    """:func:`detect_frames` on frames whose long side is at most the policy's detection size."""
    limit = policy.video_detect_long_side
    height, width = images[0].shape[:2]
    factor = limit / max(height, width) if limit and max(height, width) > limit else 1.0
    if factor == 1.0:
        return detect_frames(images, policy, detector)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = [np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
             for image in images]
    return [[replace(d, box=(d.box[0] / factor, d.box[1] / factor, d.box[2] / factor,
                             d.box[3] / factor)) for d in dets]
            for dets in detect_frames(small, policy, detector)]


def redact_chunk(data: bytes, info: VideoInfo, plan: ChunkPlan, policy: Policy,
                 detector: Detector, video: VideoSettings, threads: int = 0,
                 progress: Progress | None = None, keep_boxes: bool = False) -> ChunkOutput:
    """Redact one chunk of the video in ``data`` and return it encoded (MP4 bytes)."""
    width, height = info.display_size
    settings = encoder_settings(info, policy, video, threads)
    stage = _Stage(Tracker(width, height), ChunkEncoder(settings), policy, keep_boxes)
    try:
        batch: list[DecodedFrame] = []
        for decoded in decode_chunk(data, info, plan, warmup=WARMUP, lookahead=FILL_GAP):
            batch.append(decoded)
            if len(batch) < BATCH:
                continue
            stage.feed(batch, detect_scaled([f.image for f in batch], policy, detector))
            batch = []
            if progress:
                progress(stage.frames, plan.frame_count)
        if batch:
            stage.feed(batch, detect_scaled([f.image for f in batch], policy, detector))
        encoded = stage.finish()
    except BaseException:
        stage.encoder.abort()
        raise
    if progress:
        progress(stage.frames, plan.frame_count)
    tracker = stage.tracker
    return ChunkOutput(
        data=encoded, frames=stage.frames, detections=stage.detections,
        coasted=tracker.coasted, filled=stage.filled,
        tracks=tracker.records(plan.first_frame), model_version=detector.model_version,
        params={"detector": {"key": detector.key, **detector.params},
                "detect_long_side": policy.video_detect_long_side,
                "redaction": policy.redaction.model_dump(mode="json"),
                "tracking": {**tracker.params, "fill_gap": FILL_GAP, "fill_iou": FILL_IOU},
                "encoder": settings.to_json(), "chunk": plan.to_json()},
        boxes=stage.boxes,
    )


class _Stage:
    """Tracks, fills short mask gaps, redacts and encodes frames in order.

    Frames wait in a window of ``FILL_GAP + 1`` before they are redacted: when a box turns up
    again after a gap of up to ``FILL_GAP`` frames (a region the tracker had let go, or one it
    matched to nothing), the frames of the gap get the boxes on both sides of it. Together with
    tracking (which covers gaps after a sighting) and the look-ahead frames past the chunk's
    end, no region seen just before and just after a short gap is left bare in it.
    """

    def __init__(self, tracker: Tracker, encoder: ChunkEncoder, policy: Policy,
                 keep_boxes: bool) -> None:
        self.tracker, self.encoder, self.policy = tracker, encoder, policy
        self.window: deque[tuple[DecodedFrame, list[Detection]]] = deque()
        self.frames = self.detections = self.filled = 0
        self.keep_boxes = keep_boxes
        self.boxes: list[list[tuple[float, float, float, float]]] = []

    def feed(self, batch: list[DecodedFrame], found: list[list[Detection]]) -> None:
        for frame, detections in zip(batch, found, strict=True):
            cover = self.tracker.update(detections, frame.index)
            if frame.in_range:
                self.detections += len(detections)
            self._fill(cover)
            self.window.append((frame, cover))
            if len(self.window) > FILL_GAP + 1:
                self._emit(*self.window.popleft())

    def _fill(self, cover: list[Detection]) -> None:
        """Frames T-g..T-1 get each box of frame T-g-1 that overlaps none of their boxes but
        overlaps one in frame T (the current one), for gaps g of 1 to ``FILL_GAP`` frames."""
        entries = list(self.window)
        now = _boxes(cover)
        for gap in range(1, min(FILL_GAP, len(entries) - 1) + 1):
            before = entries[-(gap + 1)][1]
            if not before:
                continue
            earlier = _boxes(before)
            wanted = _overlapping(earlier, now)
            for _, gap_cover in entries[-gap:]:
                wanted &= ~_overlapping(earlier, _boxes(gap_cover))
            for i in np.flatnonzero(wanted):
                for _, gap_cover in entries[-gap:]:
                    gap_cover.append(before[i])
                    self.filled += 1

    def _emit(self, frame: DecodedFrame, cover: list[Detection]) -> None:
        if not frame.in_range:
            return
        self.encoder.write(redact_frame(frame.image, cover, self.policy), frame.pts,
                           frame.duration)
        self.frames += 1
        if self.keep_boxes:
            self.boxes.append([d.box for d in cover])

    def finish(self) -> bytes:
        while self.window:
            self._emit(*self.window.popleft())
        return self.encoder.finish()


def _boxes(detections: Sequence[Detection]) -> NDArray[np.float64]:
    return np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)


def _overlapping(boxes: NDArray[np.float64], others: NDArray[np.float64]) -> NDArray[np.bool_]:
    """For each box, whether any of ``others`` overlaps it by ``FILL_IOU`` or more."""
    if not len(others):
        return np.zeros(len(boxes), dtype=bool)
    return np.asarray(iou_matrix(boxes, others).max(axis=1) >= FILL_IOU)
