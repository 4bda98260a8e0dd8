"""Short-term tracking: keeps a region covered through detector misses, so masks do not flicker.

A detector run on every frame still misses a face now and then (motion blur, a turned head, a
score dipping under the threshold for one frame). Each detection extends a track (greedy
matching on overlap with the track's predicted box); a track that goes unmatched keeps being
redacted for ``max_missed`` frames at its predicted position (constant velocity, damped), with
its box growing a little each frame to absorb the uncertainty. So a face missed for up to
``max_missed`` frames, or leaving the detector's sight, stays covered: privacy beats precision.

Tracks are per chunk; the chunk's decoder hands in warm-up frames from before its range, so a
track also carries over a chunk boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from workers.detectors.base import Detection

MAX_MISSED = 5  # frames a lost track stays redacted (0.2 s at 25 fps)
MATCH_IOU = 0.1
GROWTH_PER_MISS = 0.06  # box side growth per missed frame
VELOCITY_SMOOTHING = 0.5  # weight of the previous velocity when a detection renews a track
COAST_DAMPING = 0.9  # velocity kept per frame while a track coasts


@dataclass
class Track:
    cls: str
    box: np.ndarray  # x1, y1, x2, y2 of the last detection or prediction
    velocity: np.ndarray
    score: float
    first_frame: int
    last_frame: int  # last frame the track was redacted in
    missed: int = 0
    detections: int = 1
    union: np.ndarray = field(default_factory=lambda: np.zeros(4))

    def predicted(self) -> np.ndarray:
        box = self.box + self.velocity
        if self.missed:
            grow = (box[2:] - box[:2]) * GROWTH_PER_MISS / 2
            box = np.concatenate([box[:2] - grow, box[2:] + grow])
        return box


@dataclass(frozen=True)
class TrackRecord:
    """A track for the ledger: the frames it covered, its class, best score and extent."""

    cls: str
    first_frame: int
    last_frame: int
    score: float
    box: tuple[float, float, float, float]
    detections: int


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return np.asarray(inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9))


class Tracker:
    def __init__(self, width: int, height: int, max_missed: int = MAX_MISSED) -> None:
        self.width, self.height = width, height
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self.finished: list[Track] = []
        self.coasted = 0  # boxes redacted from prediction alone

    @property
    def params(self) -> dict[str, float]:
        return {"max_missed": self.max_missed, "match_iou": MATCH_IOU,
                "growth_per_miss": GROWTH_PER_MISS}

    def update(self, detections: Sequence[Detection], frame_index: int) -> list[Detection]:
        """Boxes to redact in this frame: the detections, in their order, then the tracks they
        did not renew (callers rely on that order)."""
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        predicted = np.array([t.predicted() for t in self.tracks]).reshape(-1, 4)
        overlap = iou_matrix(predicted, boxes)
        matched_tracks: set[int] = set()
        matched_dets: set[int] = set()
        for flat in np.argsort(-overlap, axis=None):
            ti, di = divmod(int(flat), len(detections))
            if overlap[ti, di] < MATCH_IOU:
                break
            if ti in matched_tracks or di in matched_dets \
                    or self.tracks[ti].cls != detections[di].cls:
                continue
            matched_tracks.add(ti)
            matched_dets.add(di)
            self._renew(self.tracks[ti], boxes[di], detections[di].score, frame_index)
        out = list(detections)
        kept: list[Track] = []
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.missed += 1
                if track.missed > self.max_missed:
                    self.finished.append(track)
                    continue
                track.box = self._clip(track.predicted())
                track.velocity = track.velocity * COAST_DAMPING
                track.last_frame = frame_index
                track.union = _union(track.union, track.box)
                if track.box[2] > track.box[0] and track.box[3] > track.box[1]:
                    out.append(Detection(track.cls, 0.0, tuple(map(float, track.box))))  # type: ignore[arg-type]
                    self.coasted += 1
            kept.append(track)
        for di, detection in enumerate(detections):
            if di not in matched_dets:
                box = boxes[di]
                kept.append(Track(detection.cls, box, np.zeros(4), float(detection.score),
                                  frame_index, frame_index, union=box.copy()))
        self.tracks = kept
        return out

    def _renew(self, track: Track, box: np.ndarray, score: float, frame_index: int) -> None:
        if track.missed:  # the box after a gap is compared with a prediction, not a sighting
            motion = track.velocity
        else:
            motion = (box - track.box) / max(1, frame_index - track.last_frame)
        weight = VELOCITY_SMOOTHING if track.detections > 1 else 0.0
        track.velocity = weight * track.velocity + (1 - weight) * motion
        track.box, track.missed = box, 0
        track.score = max(track.score, float(score))
        track.last_frame = frame_index
        track.detections += 1
        track.union = _union(track.union, box)

    def _clip(self, box: np.ndarray) -> np.ndarray:
        return np.clip(box, 0, [self.width, self.height, self.width, self.height])

    def records(self, first_frame: int = 0) -> list[TrackRecord]:
        """Every track that covered a frame at or after ``first_frame`` (warm-up excluded)."""
        out = []
        for track in [*self.finished, *self.tracks]:
            if track.last_frame < first_frame:
                continue
            x1, y1, x2, y2 = (float(v) for v in track.union)
            out.append(TrackRecord(track.cls, max(first_frame, track.first_frame),
                                   track.last_frame, track.score, (x1, y1, x2, y2),
                                   track.detections))
        return sorted(out, key=lambda r: (r.first_frame, r.box))


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not np.any(a):
        return b.copy()
    return np.concatenate([np.minimum(a[:2], b[:2]), np.maximum(a[2:], b[2:])])
