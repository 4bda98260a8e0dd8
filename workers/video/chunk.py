"""One chunk through every stage: decode its range, detect on every frame, track, redact, encode.

The single plain function behind both the Celery chunk task and the in-process ``veil redact``;
it touches no service. It fails closed: any error raises, and the encoded chunk holds only frames
that went through detection and redaction.

Detection runs on every frame in batches through the configured detector (onnxruntime); frames
may be scaled down for detection only (``policy.video_detect_long_side``), boxes are mapped back
to full resolution and the full-resolution frame is redacted.

The guard (``policy.guard``) then checks the encoded chunk, decoded again, on sampled frames;
a face it finds makes the chunk run again with the finding re-redacted (a weak region filled
along its track) and the frames around it that the fill did not reach checked as well
(``workers.video.frame_guard``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from infra.settings import VideoSettings
from infra.video_probe import VideoInfo, VideoSource
from schemas.chunks import WARMUP_FRAMES, ChunkPlan
from schemas.policy import Policy
from workers.detectors.base import Detection, Detector
from workers.image_pipeline import detect_frames, redact_frame
from workers.video.decode import DecodedFrame, decode_chunk
from workers.video.encode import ChunkEncoder, encoder_settings
from workers.video.frame_guard import ChunkGuard
from workers.video.motion import MotionGate, box_array
from workers.video.splice import SpliceError, SplicePlan, SplicingEncoder
from workers.video.track import MAX_MISSED, Tracker, TrackRecord, iou_matrix

BATCH = 8
FILL_GAP = 3  # frames: a mask gap this short between two sightings is filled
FILL_IOU = 0.3  # overlap that makes boxes on both sides of a gap one region
# WARMUP_FRAMES before the chunk are detected and tracked but not emitted (the plan seeks early
# enough to decode them). The previous chunk runs the same fresh tracker from the same frame
# (hand-over, see _Stage), so both compute the same masks at the boundary.
HANDOVER_SWITCH = MAX_MISSED + 1  # frames both trackers run before the next chunk's takes over
assert WARMUP_FRAMES - HANDOVER_SWITCH >= 2 * (FILL_GAP + 1), "hand-over too near the boundary"
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
    height, width = images[0].shape[:2]
    factor = detection_factor(height, width, policy.video_detect_long_side)
    return _at_scale(images, factor, lambda frames: detect_frames(frames, policy, detector))


def _at_scale(images: Sequence[NDArray[np.uint8]], factor: float,
              detect: Callable[[Sequence[NDArray[np.uint8]]], list[list[Detection]]]
              ) -> list[list[Detection]]:
    """``detect`` on the frames scaled by ``factor``, boxes mapped back to full size."""
    if factor == 1.0:
        return detect(images)
    height, width = images[0].shape[:2]
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    # Down to half size bilinear sampling still sees every pixel, and INTER_AREA costs 3.4 ms a
    # 960x540 frame against 0.4 ms (coverage held: bench/README.md, run 4). Further down
    # (1080p and up) bilinear would skip pixels and alias small faces away: area averaging.
    interpolation = cv2.INTER_LINEAR if factor >= 0.5 else cv2.INTER_AREA
    small = [np.asarray(cv2.resize(image, size, interpolation=interpolation), np.uint8)
             for image in images]
    return [[replace(d, box=(d.box[0] / factor, d.box[1] / factor, d.box[2] / factor,
                             d.box[3] / factor)) for d in dets]
            for dets in detect(small)]


def detection_factor(height: int, width: int, limit: int) -> float:
    """The scale at which frames are detected: long side at most ``limit`` (0: native size).

    The network sees each side padded up to a multiple of 32, so a side just above one is
    scaled down a little more instead (at most 8 %): 960x540 at 640 is detected at 626x352,
    not 640x360 padded to 640x384, which saves 8 % of the inference.
    """
    long_side = max(height, width)
    if not limit or long_side <= limit:
        return 1.0
    factor = limit / long_side
    best = factor
    for side in (height, width):
        lower = math.floor(side * factor / 32) * 32
        if lower >= 32 and lower / (side * factor) >= 0.92:
            best = min(best, lower / side)
    return best


@dataclass(frozen=True)
class ChunkWork:
    """One chunk to redact: the video (its bytes, or a seekable file object such as
    :class:`infra.keyring.RawReader`), its probe and plan, and how to redact and encode it."""

    data: VideoSource
    info: VideoInfo
    plan: ChunkPlan
    policy: Policy
    detector: Detector
    video: VideoSettings
    threads: int = 0
    progress: Progress | None = None
    keep_boxes: bool = False


def redact_chunk(work: ChunkWork) -> ChunkOutput:
    """Redact one chunk and return it encoded (MP4 bytes), re-run until the guard passes it."""
    guard = _chunk_guard(work.policy, work.info, work.detector)
    splice: SplicePlan | None = None
    while True:
        try:
            output = _redact_chunk(work, guard, splice)
        except SpliceError:
            if guard is None or splice is None:
                raise
            guard.full_rerun()  # the GOPs do not fit: encode the whole chunk again
            splice = None
            continue
        if guard is None:
            return output
        if guard.passes(output.data, work.plan.index):
            output.tracks += guard.records()
            output.params["guard"] = guard.to_json()
            return output
        splice = guard.plan_rerun(output.data)  # only the GOPs the guard's changes touch


def _chunk_guard(policy: Policy, info: VideoInfo, detector: Detector) -> ChunkGuard | None:
    every = guard_every(policy, info)
    if not every:
        return None
    width, height = info.display_size
    factor = detection_factor(height, width, policy.video_detect_long_side)

    def detect(frame: NDArray[np.uint8]) -> list[Detection]:  # faces only, at detection size
        return _at_scale([frame], factor,
                         lambda frames: detector.detect_batch(frames, classes={"face"}))[0]

    return ChunkGuard(detector, policy, detect, every, info.tb)


def guard_every(policy: Policy, info: VideoInfo) -> int:
    """Every how many frames the guard checks one (0: it does not run on this policy)."""
    params = policy.guard
    if not params.enabled or "face" not in policy.classes:
        return 0
    rate = float(Fraction(info.average_rate)) if info.average_rate else 25.0
    return max(1, round(params.video_every_s * rate))


def _redact_chunk(work: ChunkWork, guard: ChunkGuard | None,
                  splice: SplicePlan | None = None) -> ChunkOutput:
    info, plan, policy, detector = work.info, work.plan, work.policy, work.detector
    width, height = info.display_size
    settings = encoder_settings(info, policy, work.video, work.threads)
    encoder = SplicingEncoder(settings, splice) if splice else ChunkEncoder(settings)
    handover = None
    if plan.end_pts is not None:  # a chunk follows: hand over to the tracker it will run
        start = max(0, plan.first_frame + plan.frame_count - WARMUP_FRAMES)
        handover = _Handover(Tracker(width, height), start, start + HANDOVER_SWITCH)
    stage = _Stage(Tracker(width, height), encoder, policy, work.keep_boxes, handover, guard)
    detect = _gated_detection(policy, detector, height, width, handover)
    progress = work.progress
    try:
        batch: list[DecodedFrame] = []
        for decoded in decode_chunk(work.data, info, plan, warmup=WARMUP_FRAMES,
                                   lookahead=FILL_GAP):
            batch.append(decoded)
            if len(batch) < BATCH:
                continue
            stage.feed(batch, _detect(batch, detect, guard))
            batch = []
            if progress:
                progress(stage.frames, plan.frame_count)
        if batch:
            stage.feed(batch, _detect(batch, detect, guard))
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
                "motion_gate": detect.params(),
                "redaction": policy.redaction.model_dump(mode="json"),
                "tracking": {**tracker.params, "fill_gap": FILL_GAP, "fill_iou": FILL_IOU},
                "guard": {"action": "skipped"},  # redact_chunk records the guard's
                "encoder": settings.to_json(), "chunk": plan.to_json()},
        boxes=stage.boxes,
    )


@dataclass
class _GatedDetection:
    """Detection of a chunk's frames: scaled to detection size, through the motion gate, boxes
    mapped back to full size; with the gate off, :func:`detect_scaled` on every frame. ``off``
    says why the gate is off though the policy wants it."""

    gate: MotionGate
    factor: float
    off: str | None
    policy: Policy
    detector: Detector

    def __call__(self, indices: Sequence[int],
                 images: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        if not self.gate.enabled:
            return detect_scaled(images, self.policy, self.detector)
        return _at_scale(images, self.factor, lambda frames: self.gate.run(indices, frames))

    def params(self) -> dict[str, Any]:
        if self.off is None:
            return self.gate.params()
        return {**self.gate.params(), "why": self.off}


def _gated_detection(policy: Policy, detector: Detector, height: int, width: int,
                     handover: _Handover | None) -> _GatedDetection:
    factor = detection_factor(height, width, policy.video_detect_long_side)
    every, off = policy.video_full_detect_every, None
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    if every > 1 and not detector.sees_crops(policy.classes, *size):
        every, off = 1, f"the detectors ({detector.key}) do not see crops as they see frames"
    resync = {handover.start} if handover else set()
    gate = MotionGate(every, lambda frames: detect_frames(frames, policy, detector), resync)
    return _GatedDetection(gate, factor, off, policy, detector)


def _detect(batch: list[DecodedFrame], detect: _GatedDetection,
            guard: ChunkGuard | None) -> list[list[Detection]]:
    """Detections for a batch: computed (and kept for a guard's re-run), or kept from the first
    run when the guard runs the chunk again."""
    indices = [f.index for f in batch]
    known = guard.known(indices) if guard else None
    if known is not None:
        return known
    found = detect(indices, [f.image for f in batch])
    if guard:
        guard.remember(indices, found)
    return found


@dataclass
class _Handover:
    """The next chunk's tracker, run by this chunk from the next chunk's first warm-up frame
    (``start``): its masks replace this chunk's own from frame ``switch`` on."""

    tracker: Tracker
    start: int
    switch: int


@dataclass
class _Pending:
    """A frame waiting in the fill window, with the boxes to redact in it (``boxes`` is kept in
    step with ``cover``, so the window is not converted to arrays again on every frame)."""

    frame: DecodedFrame
    cover: list[Detection]
    boxes: NDArray[np.float64]


class _Stage:
    """Tracks, fills short mask gaps, redacts and encodes frames in order.

    Frames wait in a window of ``FILL_GAP + 1`` before they are redacted: when a box turns up
    again after a gap of up to ``FILL_GAP`` frames (a region the tracker had let go, or one it
    matched to nothing), the frames of the gap get the boxes on both sides of it. Together with
    tracking (which covers gaps after a sighting) and the look-ahead frames past the chunk's
    end, no region seen just before and just after a short gap is left bare in it.

    Chunk boundaries: the next chunk starts a fresh tracker on its ``WARMUP_FRAMES`` frames
    before the boundary. This chunk runs that same tracker on the same frames (the hand-over),
    redacts the union of both trackers' boxes for ``HANDOVER_SWITCH`` frames, then the fresh
    tracker's alone. From a few frames before the boundary both chunks therefore hold the same masks
    (the same detections through the same tracker and gap filling), and a gap that straddles
    the boundary is filled by the next chunk exactly as inside a chunk. Measured flicker in
    bench/README.md.
    """

    def __init__(self, tracker: Tracker, encoder: ChunkEncoder | SplicingEncoder,
                 policy: Policy, keep_boxes: bool, handover: _Handover | None = None,
                 guard: ChunkGuard | None = None) -> None:
        self.tracker, self.encoder, self.policy = tracker, encoder, policy
        self.handover, self.guard = handover, guard
        self.window: deque[_Pending] = deque()
        self.frames = self.detections = self.filled = 0
        self.keep_boxes = keep_boxes
        self.boxes: list[list[tuple[float, float, float, float]]] = []

    def feed(self, batch: list[DecodedFrame], found: list[list[Detection]]) -> None:
        for frame, detections in zip(batch, found, strict=True):
            cover = self.tracker.update(detections, frame.index)
            handover = self.handover
            if handover is not None and frame.index >= handover.start:
                theirs = handover.tracker.update(detections, frame.index)
                # both lists start with the detections; the rest are coasting tracks
                cover = theirs if frame.index >= handover.switch \
                    else cover + theirs[len(detections):]
            if frame.in_range:
                self.detections += len(detections)
            pending = _Pending(frame, cover, box_array(cover))
            self._fill(pending)
            self.window.append(pending)
            if len(self.window) > FILL_GAP + 1:
                self._emit(self.window.popleft())

    def _fill(self, current: _Pending) -> None:
        """Frames T-g..T-1 get each box of frame T-g-1 that overlaps none of their boxes but
        overlaps one in frame T (the current one), for gaps g of 1 to ``FILL_GAP`` frames."""
        entries = list(self.window)
        for gap in range(1, min(FILL_GAP, len(entries) - 1) + 1):
            before = entries[-(gap + 1)]
            if not before.cover:
                continue
            between = entries[-gap:]
            # first the boxes the gap lacks (few: a crowd is seen again frame after frame)
            lacking = np.flatnonzero(~_overlapping_any(before.boxes, [e.boxes for e in between]))
            added = lacking[_overlapping(before.boxes[lacking], current.boxes)]
            if not len(added):
                continue
            for entry in between:
                entry.cover.extend(before.cover[i] for i in added.tolist())
                entry.boxes = np.concatenate([entry.boxes, before.boxes[added]])
                self.filled += len(added)

    def _emit(self, pending: _Pending) -> None:
        frame, cover = pending.frame, pending.cover
        if not frame.in_range:
            return
        key = False
        image: NDArray[np.uint8] | None = None
        if self.guard is None:
            image = redact_frame(frame.image, cover, self.policy)
        else:  # with the faces and fills an earlier run's check asked for
            cover = self.guard.cover(frame.index, cover)
            if self.encoder.encodes(frame.pts):  # else its encoding from the last run stands
                image = redact_frame(frame.image, cover, self.policy)
            image, cover, key = self.guard.finish_frame(image, cover, frame.index, frame.pts)
        if image is not None:
            self.encoder.write(image, frame.pts, frame.duration, key)
        self.frames += 1
        if self.keep_boxes:
            self.boxes.append([d.box for d in cover])

    def finish(self) -> bytes:
        while self.window:
            self._emit(self.window.popleft())
        return self.encoder.finish()


def _overlapping_any(boxes: NDArray[np.float64],
                     groups: list[NDArray[np.float64]]) -> NDArray[np.bool_]:
    """:func:`_overlapping` against all of ``groups`` together, group by group, each compared
    only with the boxes no earlier group overlapped: in a crowd nearly every box is found
    again in the next frame, so the later frames cost little (crowd clip, 329 boxes a frame:
    the fill went from 14.3 to 4.3 ms a frame)."""
    found = np.zeros(len(boxes), dtype=bool)
    left = np.arange(len(boxes))
    for others in groups:
        if not len(left):
            break
        hit = _overlapping(boxes[left], others)
        found[left[hit]] = True
        left = left[~hit]
    return found


def _overlapping(boxes: NDArray[np.float64], others: NDArray[np.float64]) -> NDArray[np.bool_]:
    """For each box, whether any of ``others`` overlaps it by ``FILL_IOU`` or more."""
    if not len(others):
        return np.zeros(len(boxes), dtype=bool)
    return np.asarray(iou_matrix(boxes, others).max(axis=1) >= FILL_IOU)
