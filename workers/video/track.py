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
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from workers.detectors.base import Detection

MAX_MISSED = 5  # frames a lost track stays redacted (0.2 s at 25 fps)
MATCH_IOU = 0.1
GROWTH_PER_MISS = 0.06  # box side growth per missed frame
VELOCITY_SMOOTHING = 0.5  # weight of the previous velocity when a detection renews a track
COAST_DAMPING = 0.9  # velocity kept per frame while a track coasts


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
    # in place where possible: the fill window compares ~70 boxes with ~200 on every frame
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    width = np.minimum(a[:, None, 2], b[None, :, 2])
    width -= np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3])
    height -= np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.maximum(width, 0, out=width)
    inter *= np.maximum(height, 0, out=height)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :]
    union -= inter
    return np.asarray(inter / np.maximum(union, 1e-9, out=union))


class Tracker:
    """Tracks as rows of parallel arrays, so one frame's update is a few array operations
    whatever the number of tracks (a crowd with faint detections keeps 50+ tracks alive)."""

    def __init__(self, width: int, height: int, max_missed: int = MAX_MISSED) -> None:
        self.width, self.height = width, height
        self.max_missed = max_missed
        self.coasted = 0  # boxes redacted from prediction alone
        self._limits = np.array([width, height, width, height], dtype=np.float64)
        self._box = np.zeros((0, 4))  # last detection or prediction, x1 y1 x2 y2
        self._velocity = np.zeros((0, 4))
        self._union = np.zeros((0, 4))  # extent over the track's life (for the ledger)
        self._missed = np.zeros(0, dtype=np.int64)
        self._detections = np.zeros(0, dtype=np.int64)
        self._first = np.zeros(0, dtype=np.int64)
        self._last = np.zeros(0, dtype=np.int64)  # last frame the track was redacted in
        self._score = np.zeros(0)
        self._cls: list[str] = []
        self._finished: list[TrackRecord] = []

    @property
    def params(self) -> dict[str, float]:
        return {"max_missed": self.max_missed, "match_iou": MATCH_IOU,
                "growth_per_miss": GROWTH_PER_MISS}

    def update(self, detections: Sequence[Detection], frame_index: int) -> list[Detection]:
        """Boxes to redact in this frame: the detections, in their order, then the tracks they
        did not renew (callers rely on that order)."""
        boxes = np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)
        overlap = iou_matrix(_predicted(self._box, self._velocity, self._missed > 0), boxes)
        track_of = np.full(len(detections), -1)
        matched = np.zeros(len(self._cls), dtype=bool)
        for flat in np.argsort(-overlap, axis=None):
            ti, di = divmod(int(flat), len(detections))
            if overlap[ti, di] < MATCH_IOU:
                break
            if matched[ti] or track_of[di] >= 0 or self._cls[ti] != detections[di].cls:
                continue
            matched[ti], track_of[di] = True, ti
        renewed = track_of >= 0
        self._renew(track_of[renewed], boxes[renewed],
                    np.array([d.score for d in detections], dtype=np.float64)[renewed],
                    frame_index)
        out = list(detections)
        lost = np.flatnonzero(~matched)
        self._missed[lost] += 1
        ended = lost[self._missed[lost] > self.max_missed]
        coast = lost[self._missed[lost] <= self.max_missed]
        self._finished.extend(self._records(ended))
        if len(coast):
            box = np.clip(_predicted(self._box[coast], self._velocity[coast], None), 0,
                          self._limits)
            self._box[coast] = box
            self._velocity[coast] = self._velocity[coast] * COAST_DAMPING
            self._last[coast] = frame_index
            self._union[coast] = _union(self._union[coast], box)
            visible = (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
            for ti, row in zip(coast[visible].tolist(), box[visible].tolist(), strict=True):
                out.append(Detection(self._cls[ti], 0.0, tuple(row)))  # type: ignore[arg-type]
            self.coasted += int(visible.sum())
        keep = np.ones(len(self._cls), dtype=bool)
        keep[ended] = False
        self._keep(keep)
        fresh = np.flatnonzero(~renewed)
        self._start([detections[i] for i in fresh.tolist()], boxes[fresh], frame_index)
        return out

    def _renew(self, tracks: NDArray[np.intp], boxes: NDArray[np.float64],
               scores: NDArray[np.float64], frame_index: int) -> None:
        if not len(tracks):
            return
        # the box after a gap is compared with a prediction, not a sighting
        gap = self._missed[tracks] > 0
        steps = np.maximum(1, frame_index - self._last[tracks])[:, None]
        motion = np.where(gap[:, None], self._velocity[tracks],
                          (boxes - self._box[tracks]) / steps)
        weight = np.where(self._detections[tracks] > 1, VELOCITY_SMOOTHING, 0.0)[:, None]
        self._velocity[tracks] = weight * self._velocity[tracks] + (1 - weight) * motion
        self._box[tracks] = boxes
        self._missed[tracks] = 0
        self._score[tracks] = np.maximum(self._score[tracks], scores)
        self._last[tracks] = frame_index
        self._detections[tracks] += 1
        self._union[tracks] = _union(self._union[tracks], boxes)

    def _keep(self, keep: NDArray[np.bool_]) -> None:
        if keep.all():
            return
        for name in ("_box", "_velocity", "_union", "_missed", "_detections", "_first", "_last",
                     "_score"):
            setattr(self, name, getattr(self, name)[keep])
        self._cls = [c for c, k in zip(self._cls, keep.tolist(), strict=True) if k]

    def _start(self, detections: list[Detection], boxes: NDArray[np.float64],
               frame_index: int) -> None:
        n = len(detections)
        if not n:
            return
        self._box = np.concatenate([self._box, boxes])
        self._velocity = np.concatenate([self._velocity, np.zeros((n, 4))])
        self._union = np.concatenate([self._union, boxes])
        self._missed = np.concatenate([self._missed, np.zeros(n, dtype=np.int64)])
        self._detections = np.concatenate([self._detections, np.ones(n, dtype=np.int64)])
        self._first = np.concatenate([self._first, np.full(n, frame_index)])
        self._last = np.concatenate([self._last, np.full(n, frame_index)])
        self._score = np.concatenate([self._score, [float(d.score) for d in detections]])
        self._cls.extend(d.cls for d in detections)

    def _records(self, rows: NDArray[np.intp]) -> list[TrackRecord]:
        return [TrackRecord(self._cls[i], int(self._first[i]), int(self._last[i]),
                            float(self._score[i]), tuple(self._union[i].tolist()),  # type: ignore[arg-type]
                            int(self._detections[i])) for i in rows.tolist()]

    def records(self, first_frame: int = 0) -> list[TrackRecord]:
        """Every track that covered a frame at or after ``first_frame`` (warm-up excluded)."""
        out = [replace(r, first_frame=max(first_frame, r.first_frame))
               for r in [*self._finished, *self._records(np.arange(len(self._cls)))]
               if r.last_frame >= first_frame]
        return sorted(out, key=lambda r: (r.first_frame, r.box))


def _predicted(box: NDArray[np.float64], velocity: NDArray[np.float64],
               coasting: NDArray[np.bool_] | None) -> NDArray[np.float64]:
    """Where each track is expected next: constant velocity, and a box grown a little on every
    side for a track that is coasting (``None``: all are)."""
    out = box + velocity
    grow = (out[:, 2:] - out[:, :2]) * GROWTH_PER_MISS / 2
    grown = np.concatenate([out[:, :2] - grow, out[:, 2:] + grow], axis=1)
    return grown if coasting is None else np.where(coasting[:, None], grown, out)


def _union(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise union of boxes; a row of zeros in ``a`` is no box yet."""
    joined = np.concatenate([np.minimum(a[:, :2], b[:, :2]), np.maximum(a[:, 2:], b[:, 2:])],
                            axis=1)
    return np.where(np.any(a, axis=1)[:, None], joined, b)
