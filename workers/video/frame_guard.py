"""The guard on a video chunk: the chunk as published (the encoded H.264, decoded again) holds
no face the detector finds at the guard's threshold, in the frames it checks.

Why the encoded frames: x264 moves detector scores of blurred regions by up to 0.3-0.4 either
way (bench/README.md, run 8: a blurred passer-by at 0.38 before encoding scored 0.51 after), so
a check of the frames in memory would pass outputs that a check of the file would not.

How, per chunk (``workers.video.chunk.redact_chunk`` drives it):

1. The chunk is redacted and encoded as usual, except that every frame whose index is a
   multiple of ``every`` (one in ``policy.guard.video_every_s`` seconds of video; 1 with
   ``video_every_s = 0``) is encoded as a keyframe. Then those frames of the output are decoded
   (keyframes decode alone: the decoder skips the others) and checked at the detection size.
2. A finding (``weak``: on or near a redacted region; ``miss``: elsewhere) may be visible in
   the frames around it that were not checked, up to the checked frames before and after it
   (its *window*). So the chunk is redacted again, the first pass's detections reused:

   * a weak finding is filled solid over the union of the face and the regions it lies on, and
     so is that region's *chain*: the same region followed frame by frame, backwards and
     forwards, as long as the frame holds a detected box overlapping it (IoU at least
     ``CHAIN_IOU``; the fill moves with the region). A face redacted too weakly in one frame is
     redacted by the same too-weak blur in its neighbours, so it is filled wherever its region
     goes in the chunk, checked or not;
   * a missed face is redacted like any face in its frame and recorded as a detection.

   On the next run every frame of a finding's window that its chain did not fill is checked as
   well as the sampled frames (a missed face has no chain: its whole window is checked); a
   finding there widens the checks the same way. Of a chain's filled frames, the finding's own
   frame and the sampled frames are checked.

   The next run re-encodes only the GOPs that hold a frame it changes and splices them into the
   chunk (``workers.video.splice``); the other frames keep their bytes, so a frame already
   checked clean there is not checked again (``clean``). If the splice cannot be exact, the whole
   chunk is encoded again and every frame due a check is checked.
3. That repeats while findings remain, up to ``policy.guard.max_rounds`` re-runs; then, or at
   the first finding under ``on_failure = "fail"``, the chunk fails with
   :class:`workers.guard.GuardFailure` (permanent: the source fails and nothing is published).
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
from numpy.typing import NDArray

from schemas.policy import Policy
from workers.detectors.base import Detection, Detector
from workers.guard import Detect, Finding, GuardFailure, check, fill, fill_region, regions_under
from workers.redaction import enlarge_box, redacted_region
from workers.video.splice import SpliceError, SplicePlan, plan_splice
from workers.video.track import TrackRecord, iou_matrix

CHAIN_IOU = 0.4  # a region in the next frame continues a chain at this overlap or more


@dataclass
class ChunkGuard:
    detector: Detector
    policy: Policy
    detect: Detect  # a frame to its faces, at the detection size
    every: int  # frames whose index is a multiple of this are checked
    time_base: Fraction  # of the source's timestamps (``pts`` below)
    runs: int = 0  # times the chunk was redacted and encoded
    checks: int = 0  # frames checked, over all runs
    escalated: dict[str, Any] | None = None  # the first finding, which opened a window
    window: set[int] = field(default_factory=set)  # frames checked on later runs as well
    found: list[tuple[int, Finding]] = field(default_factory=list)  # over all runs
    missed: defaultdict[int, list[Detection]] = field(default_factory=lambda: defaultdict(list))
    fills: defaultdict[int, list[Detection]] = field(default_factory=lambda: defaultdict(list))
    detections: dict[int, list[Detection]] = field(default_factory=dict)  # first run's, by frame
    covers: dict[int, list[Detection]] = field(default_factory=dict)  # this run's, by frame
    # this run's frames to check, by time in seconds: their index and the regions redacted in
    # them. By time, not timestamp: the MP4 muxer may count the chunk in finer ticks than the
    # source (it keeps at least 10,000 a second; Matroska counts 1,000, AVI one a frame).
    redacted: dict[Fraction, tuple[int, list[Detection]]] = field(default_factory=dict)
    times: dict[int, Fraction] = field(default_factory=dict)  # every frame's time, by index
    clean: set[int] = field(default_factory=set)  # checked clean, bytes unchanged since
    changed: set[int] = field(default_factory=set)  # frames the next run redacts differently
    seconds: float = 0.0

    # -- during a run ------------------------------------------------------------------------

    def known(self, indices: Sequence[int]) -> list[list[Detection]] | None:
        """The first run's detections for these frames, on a later run."""
        if self.runs == 0:
            return None
        return [self.detections[index] for index in indices]

    def remember(self, indices: Sequence[int], found: Sequence[list[Detection]]) -> None:
        if self.runs == 0:
            self.detections.update(zip(indices, found, strict=True))

    def cover(self, index: int, cover: list[Detection]) -> list[Detection]:
        """The boxes to redact in frame ``index``: the tracker's and the faces the guard found
        missing there on an earlier run."""
        missed = self.missed.get(index)
        return cover + missed if missed else cover

    def finish_frame(self, image: NDArray[np.uint8] | None, cover: list[Detection], index: int,
                     pts: int) -> tuple[NDArray[np.uint8] | None, list[Detection], bool]:
        """The redacted frame with this frame's fills, every region redacted in it, and whether
        the encoder makes it a keyframe (a sampled frame: decoded alone for the check).
        ``image`` is None for a frame whose encoding from the last run stands (spliced re-run):
        it is only recorded, and checked if due and not yet checked clean."""
        time = pts * self.time_base
        self.covers[index], self.times[index] = cover, time
        fills = self.fills.get(index, [])
        regions = cover + fills if fills else cover
        sampled = index % self.every == 0
        if (sampled or index in self.window) and index not in self.clean:
            self.redacted[time] = (index, regions)
        image = fill(image, fills) if image is not None else None
        return image, regions, sampled and self.every > 1

    # -- after a run -------------------------------------------------------------------------

    def passes(self, encoded: bytes, chunk: int) -> bool:
        """Check the encoded chunk; True when it may be published. After findings, prepares the
        next run (False) or raises :class:`GuardFailure`."""
        started = time.perf_counter()
        self.runs += 1
        regions, self.redacted = self.redacted, {}
        findings, size = self._check(encoded, regions, chunk)
        self.seconds += time.perf_counter() - started
        self.clean |= {index for index, _ in regions.values()} - {i for i, _ in findings}
        if not findings:
            return True
        self.found += findings
        params = self.policy.guard
        if params.on_failure == "fail" or self.runs > params.max_rounds:
            index, worst = max(findings, key=lambda item: item[1].score)
            raise GuardFailure(
                f"guard: a face is still visible in chunk {chunk} after redaction "
                f"({len(findings)} in the frames checked, best score {worst.score:.2f}, "
                f"{worst.kind}, frame {index}; policy {self.policy.name} "
                f"on_failure={params.on_failure}, {self.runs - 1} re-runs); "
                "the output was not published")
        redacted = dict(regions.values())
        if self.escalated is None:
            index, first = findings[0]
            self.escalated = {"frame": index, "run": self.runs, "found": len(findings),
                              "kind": first.kind, "score": first.score}
        self.changed = set()
        for index, finding in findings:
            window = set(range(index - self.every + 1, index + self.every))
            if finding.kind == "miss":
                self.missed[index].append(Detection("face", finding.score, finding.box))
                self.changed.add(index)
            else:
                chain = self._chain(index, finding, redacted[index], size)
                for frame, region in chain.items():
                    self.fills[frame].append(region)
                self.changed |= chain.keys()
                window -= chain.keys() - {index}  # the finding's own frame is checked again
            self.window |= window
        return False

    def plan_rerun(self, encoded: bytes) -> SplicePlan | None:
        """The GOPs of ``encoded`` the next run re-encodes: those holding a changed frame.
        Their frames leave ``clean`` (new bytes are checked anew). None when the chunk cannot
        be spliced: the next run encodes it whole (:meth:`full_rerun`)."""
        try:
            plan = plan_splice(encoded, [self.times[index] for index in self.changed])
        except SpliceError:
            self.full_rerun()
            return None
        self.clean -= {index for index, time in self.times.items() if plan.rewrites(time)}
        return plan

    def full_rerun(self) -> None:
        """The next run re-encodes the whole chunk: nothing checked before still stands."""
        self.clean.clear()
        self.redacted = {}

    def _chain(self, index: int, finding: Finding, redacted: list[Detection],
               size: tuple[int, int]) -> dict[int, Detection]:
        """What a weak finding in frame ``index`` fills, by frame: in its frame the face joined
        with the regions it lies on (:func:`workers.guard.fill_region`); in the frames before
        and after, as long as the chain of those regions goes on, the regions the chain reaches
        joined with the face's box moved as the regions moved.

        Only detected regions make a chain, not the tracker's coasting boxes: a coasting box is
        a guess where a face went (a track seen once does not move at all), and a chain along
        guesses would leave the face's real path unfilled and, worse, unchecked. Where the
        detections stop or jump further than ``CHAIN_IOU`` allows, the chain ends and the
        window's checks take over."""
        redaction = self.policy.redaction
        width, height = size
        chain = {index: fill_region(finding, redacted, redaction, width, height)}
        seed = _array(regions_under(finding.box, _sighted(self.covers.get(index, [])),
                                    redaction, width, height))
        if not len(seed):
            return chain
        face = np.array(enlarge_box(finding.box, redaction.for_class("face").box_scale,
                                    width, height), dtype=np.float64)
        anchor = _centre(seed)
        for step in (-1, 1):
            previous, frame = seed, index + step
            while frame in self.covers:
                current = _array([redacted_region(d, redaction, width, height)
                                  for d in _sighted(self.covers[frame])])
                overlap = iou_matrix(previous, current)
                if not overlap.size:
                    break
                best = overlap.argmax(axis=1)
                matched = np.unique(best[overlap[np.arange(len(previous)), best] >= CHAIN_IOU])
                if not len(matched):
                    break
                previous = current[matched]
                moved = face + np.tile(_centre(previous) - anchor, 2)
                box = np.concatenate([previous, moved[None]])
                corners = (max(0.0, box[:, 0].min()), max(0.0, box[:, 1].min()),
                           min(float(width), box[:, 2].max()),
                           min(float(height), box[:, 3].max()))
                chain[frame] = Detection("face", finding.score, corners)
                frame += step
        return chain

    def _check(self, encoded: bytes, regions: dict[Fraction, tuple[int, list[Detection]]],
               chunk: int) -> tuple[list[tuple[int, Finding]], tuple[int, int]]:
        """Findings in the frames to check of the encoded chunk, and its frame size. Sampled
        frames are keyframes: without a window the decoder skips every other frame."""
        findings: list[tuple[int, Finding]] = []
        threshold = self.policy.guard.threshold
        size, seen = (0, 0), 0
        with av.open(io.BytesIO(encoded), mode="r") as container:
            stream = container.streams.video[0]
            if self.every > 1 and not self.window:
                stream.codec_context.skip_frame = "NONKEY"
            for frame in container.decode(stream):
                entry = regions.get(frame.pts * frame.time_base) \
                    if frame.pts is not None and frame.time_base is not None else None
                if entry is None:
                    continue
                index, redacted = entry
                image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
                size = (image.shape[1], image.shape[0])
                seen += 1
                findings += [(index, f) for f in check(image, redacted, self.detector,
                                                        threshold, self.policy.redaction,
                                                        self.detect)]
        self.checks += seen
        if seen != len(regions):  # fail closed: a frame due a check was not found
            raise GuardFailure(f"guard: {len(regions) - seen} of the {len(regions)} frames to "
                               f"check were not found in the encoded chunk {chunk}")
        return findings, size

    # -- the record --------------------------------------------------------------------------

    def records(self) -> list[TrackRecord]:
        """The missed faces the guard redacted, one frame each, for the ledger."""
        return [TrackRecord(d.cls, index, index, round(d.score, 4),
                            tuple(round(v, 1) for v in d.box), 1)  # type: ignore[arg-type]
                for index, faces in sorted(self.missed.items()) for d in faces]

    def to_json(self) -> dict[str, Any]:
        return {"action": "reredacted" if self.runs > 1 else "passed",
                "threshold": self.policy.guard.threshold, "every_frames": self.every,
                "runs": self.runs, "checks": self.checks, "escalated": self.escalated,
                "weak": sum(f.kind == "weak" for _, f in self.found),
                "miss": sum(f.kind == "miss" for _, f in self.found),
                "filled_frames": len(self.fills), "added_faces": len(self.records()),
                "seconds": round(self.seconds, 4)}


def _sighted(cover: list[Detection]) -> list[Detection]:
    """The boxes of a frame's cover that a detector reported (the tracker's coasting boxes
    carry score 0)."""
    return [d for d in cover if d.score > 0.0]


def _array(boxes: Sequence[tuple[int, int, int, int]]) -> NDArray[np.float64]:
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _centre(boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    """The centre of the box around ``boxes``."""
    return np.array([(boxes[:, 0].min() + boxes[:, 2].max()) / 2,
                     (boxes[:, 1].min() + boxes[:, 3].max()) / 2])
