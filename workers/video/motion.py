"""The motion gate: on a static camera, detect again only where the picture changed.

Detection is most of a video frame's cost (about 20 of 30 ms on a 2-core CPU). A fixed camera
(CCTV, a doorway, a classroom) shows mostly the same pixels from frame to frame, and a face
that has not moved is still where the last full detection found it. So every
``policy.video_full_detect_every`` frames the whole frame is detected (a *full pass*); in the
frames between, the frame is compared with the last fully detected one (the *reference*), and:

- the regions that changed, each grown to take in every reference box it touches and a margin
  of context, are cut out and detected on their own (crops batch together by size);
- the reference's detections outside every changed region are kept as they are;
- a frame in which nothing changed keeps the reference's detections whole.

When the changed regions together cover more than ``MAX_CHANGED`` of the frame (a moving
camera, a cut, a light switched on) the crops would cost about as much as the frame, so the
frame gets a full pass and becomes the new reference. A moving camera therefore costs what it
did without the gate, plus the comparison (0.4-0.5 ms a frame at 626x352).

Why it cannot hide a face for long: a new or moving face changes pixels, so it is detected in
its crop; a face that changed too little to pass the threshold is detected at the latest by the
next full pass (``video_full_detect_every`` frames, 8 by default: a third of a second at 25 fps),
and the tracker and gap filling carry boxes across as they do without the gate. The guard keeps
checking what is published (sampled frames, decoded from the encoded chunk) exactly as before.

Full passes fall on frames whose index is a multiple of ``every``, on the first frame a chunk
sees and on the frame where the next chunk's tracker starts (the hand-over): both chunks then
detect the same frames the same way, and the boundary masks stay equal (workers/video/chunk.py).

The gate only runs for detectors whose result on a crop is what they would find in that part of
the whole frame, at the same scale (``Detector.sees_crops``): CenterFace, fully convolutional at
native resolution. A detector that letterboxes every input to one size (YOLO) would see a crop
enlarged and pay a full frame's cost for it; with one in the policy every frame is detected
whole, and the chunk's record says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from workers.detectors.base import Detection

MAX_CHANGED = 0.5  # share of changed blocks (context included) above which: a full pass
DIFF_LEVEL = 12  # grey-level change (after a 5x5 blur) that counts as a change
DIFF_SCALE = 2  # the comparison runs at 1/DIFF_SCALE of the detection size
ALIGN = 32  # crop sides are multiples of the network's stride multiple: no padding, few sizes
# Changes are gathered in ALIGN-px blocks, each changed block with its 8 neighbours: a changed
# region is detected with at least ALIGN px of context around it. A reference box taken into a
# crop gets MARGIN px (CenterFace's stride is 4; a face needs a little context, not much).
MARGIN = 24
MAX_CROPS = 8  # more separate regions than this are merged into their bounding box

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 at detection size, x2/y2 exclusive
Detect = Callable[[Sequence[NDArray[np.uint8]]], list[list[Detection]]]


@dataclass
class GateCounts:
    """What the gate did over a chunk, recorded with the chunk's parameters."""

    full: int = 0  # frames detected whole
    cropped: int = 0  # frames of which only changed regions were detected
    unchanged: int = 0  # frames that kept the reference's detections whole
    crop_pixels: int = 0  # detection-size pixels detected in crops
    frame_pixels: int = 0  # detection-size pixels of one frame

    def to_json(self) -> dict[str, Any]:
        detected = self.full * self.frame_pixels + self.crop_pixels
        frames = self.full + self.cropped + self.unchanged
        return {"full": self.full, "cropped": self.cropped, "unchanged": self.unchanged,
                "detected_share": round(detected / max(1, frames * self.frame_pixels), 3)}


@dataclass
class _Reference:
    index: int
    grey: NDArray[np.uint8]
    detections: list[Detection]  # at detection size


@dataclass
class _Planned:
    crops: list[Box] | None  # None: a full pass
    reference: int  # index of the reference frame (itself for a full pass)


@dataclass
class MotionGate:
    """Decides, frame by frame in order, what to detect; keeps the reference between batches.

    ``every`` 1 turns the gate off (every frame is a full pass). ``detect`` runs the detector
    on a list of images at detection size; boxes come back in the same pixels.
    """

    every: int
    detect: Detect
    resync: set[int] = field(default_factory=set)  # frame indices that must be full passes
    counts: GateCounts = field(default_factory=GateCounts)
    _reference: _Reference | None = None

    @property
    def enabled(self) -> bool:
        return self.every > 1

    def params(self) -> dict[str, Any]:
        if not self.enabled:
            return {"full_detect_every": self.every, "action": "off"}
        return {"full_detect_every": self.every, "max_changed": MAX_CHANGED,
                "diff_level": DIFF_LEVEL, "margin": MARGIN, **self.counts.to_json()}

    def run(self, indices: Sequence[int],
            images: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        """Detections for consecutive frames (at detection size), in order."""
        if not self.enabled:
            return self.detect(images)
        height, width = images[0].shape[:2]
        self.counts.frame_pixels = height * width
        plans, greys = self._plan(indices, images)
        # Which frames are full passes depends on pixels only, so it is decided first; then the
        # full passes run as one batch, and the crops, grown by their reference's boxes, as one.
        full = [k for k, plan in enumerate(plans) if plan.crops is None]
        found: dict[int, list[Detection]] = {}
        if self._reference is not None:
            found[self._reference.index] = self._reference.detections
        if full:
            found.update(zip([indices[k] for k in full],
                             self.detect([images[k] for k in full]), strict=True))
        boxes_of = {index: box_array(dets) for index, dets in found.items()}
        regions = {k: _grown(plan.crops, _touching(plan.crops, boxes_of[plan.reference]),
                             height, width)
                   for k, plan in enumerate(plans) if plan.crops is not None}
        jobs = [(k, box) for k, grown in regions.items() for box in grown]
        crop_found = self.detect([images[k][y1:y2, x1:x2]
                                  for k, (x1, y1, x2, y2) in jobs]) if jobs else []
        in_crops: dict[int, list[Detection]] = {k: [] for k in regions}
        for (k, (x1, y1, _, _)), dets in zip(jobs, crop_found, strict=True):
            in_crops[k] += [_shifted(d, x1, y1) for d in dets]
        results: list[list[Detection]] = []
        for k, plan in enumerate(plans):
            if plan.crops is None:
                self.counts.full += 1
                results.append(found[indices[k]])
                continue
            self.counts.crop_pixels += _area(regions[k])
            if regions[k]:
                self.counts.cropped += 1
            else:
                self.counts.unchanged += 1
            ref = plan.reference
            results.append(_outside(found[ref], boxes_of[ref], regions[k]) + in_crops[k])
        if full:
            index = indices[full[-1]]
            self._reference = _Reference(index, greys[full[-1]], found[index])
        return results

    def _plan(self, indices: Sequence[int], images: Sequence[NDArray[np.uint8]]
              ) -> tuple[list[_Planned], list[NDArray[np.uint8]]]:
        """Full pass or changed regions, frame by frame, and the frames' grey comparison images."""
        height, width = images[0].shape[:2]
        greys = [_grey(image) for image in images]
        reference = self._reference
        ref_index, ref_grey = (reference.index, reference.grey) if reference else (None, None)
        plans: list[_Planned] = []
        for index, grey in zip(indices, greys, strict=True):
            full = ref_grey is None or index % self.every == 0 or index in self.resync
            changed: list[Box] = []
            if not full:
                assert ref_grey is not None
                changed, share = _changed_regions(ref_grey, grey, height, width)
                full = share > MAX_CHANGED
            if full:
                ref_index, ref_grey = index, grey
                plans.append(_Planned(None, index))
            else:
                assert ref_index is not None
                plans.append(_Planned(changed, ref_index))
        return plans, greys


def _grey(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, width // DIFF_SCALE), max(1, height // DIFF_SCALE)),
                       interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    return np.asarray(cv2.GaussianBlur(grey, (5, 5), 0), np.uint8)


def _changed_regions(before: NDArray[np.uint8], after: NDArray[np.uint8], height: int,
                     width: int) -> tuple[list[Box], float]:
    """The regions (detection size, aligned to ``ALIGN``, context included) where the grey
    level moved, and the share of the frame they cover."""
    mask = cv2.absdiff(before, after) > DIFF_LEVEL
    if not mask.any():
        return [], 0.0
    block = ALIGN // DIFF_SCALE
    rows, cols = -(-mask.shape[0] // block), -(-mask.shape[1] // block)
    padded = np.zeros((rows * block, cols * block), dtype=bool)
    padded[:mask.shape[0], :mask.shape[1]] = mask
    changed = np.asarray(padded.reshape(rows, block, cols, block).any(axis=(1, 3)), np.uint8)
    blocks = np.asarray(cv2.dilate(changed, np.ones((3, 3), np.uint8)), np.uint8)
    share = float(blocks.mean())
    if share > MAX_CHANGED:
        return [], share
    count, _, stats, _ = cv2.connectedComponentsWithStats(blocks, connectivity=8)
    return [(x * ALIGN, y * ALIGN, min(width, (x + w) * ALIGN), min(height, (y + h) * ALIGN))
            for x, y, w, h, _ in stats[1:count].tolist()], share


def _touching(regions: list[Box], boxes: NDArray[np.float64]) -> list[Box]:
    """The reference boxes that overlap a region: a face whose pixels changed only in part is
    detected again whole, not cut by the crop."""
    if not regions or not len(boxes):
        return []
    grown = np.array(regions, dtype=np.float64)
    touching = ((boxes[:, None, 0] < grown[None, :, 2]) & (boxes[:, None, 2] > grown[None, :, 0])
                & (boxes[:, None, 1] < grown[None, :, 3]) & (boxes[:, None, 3] > grown[None, :, 1]))
    return [(int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2)))
            for x1, y1, x2, y2 in boxes[touching.any(axis=1)].tolist()]


def _grown(regions: list[Box], boxes: list[Box], height: int, width: int) -> list[Box]:
    """The crops: the regions and the boxes (these with ``MARGIN``), sides rounded up to
    ``ALIGN`` inside the frame, overlapping ones merged (repeatedly, as a merge can make new
    overlaps); more than ``MAX_CROPS`` become their bounding box."""
    crops = [_aligned(box, height, width, 0) for box in regions]
    crops += [_aligned(box, height, width, MARGIN) for box in boxes]
    merged = True
    while merged:
        merged = False
        for i in range(len(crops)):
            for j in range(i + 1, len(crops)):
                if _overlap(crops[i], crops[j]):
                    crops[i] = _aligned(_union(crops[i], crops[j]), height, width, 0)
                    del crops[j]
                    merged = True
                    break
            if merged:
                break
    if len(crops) > MAX_CROPS:
        whole = crops[0]
        for box in crops[1:]:
            whole = _union(whole, box)
        crops = [_aligned(whole, height, width, 0)]
    return crops


def _aligned(box: Box, height: int, width: int, margin: int) -> Box:
    x1, x2 = _span(box[0] - margin, box[2] + margin, width)
    y1, y2 = _span(box[1] - margin, box[3] + margin, height)
    return x1, y1, x2, y2


def _span(low: int, high: int, limit: int) -> tuple[int, int]:
    """[low, high) clamped to [0, limit), its length rounded up to a multiple of ``ALIGN``
    (or the whole side when that does not fit), grown to the right and then to the left."""
    low, high = max(0, low), min(limit, high)
    length = -(-max(1, high - low) // ALIGN) * ALIGN
    if length >= limit:
        return 0, limit
    high = low + length
    if high > limit:
        low, high = limit - length, limit
    return low, high


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(a: Box, b: Box) -> Box:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _area(boxes: list[Box]) -> int:
    return sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in boxes)


def box_array(detections: Sequence[Detection]) -> NDArray[np.float64]:
    """The detections' boxes as an N x 4 array."""
    return np.array([d.box for d in detections], dtype=np.float64).reshape(-1, 4)


def _outside(detections: list[Detection], boxes: NDArray[np.float64],
             regions: list[Box]) -> list[Detection]:
    """The detections that overlap none of the regions (those are detected again in crops)."""
    if not regions:
        return list(detections)
    return [d for d, box in zip(detections, boxes.tolist(), strict=True)
            if not any(_overlap((box[0], box[1], box[2], box[3]), r)  # type: ignore[arg-type]
                       for r in regions)]


def _shifted(detection: Detection, dx: int, dy: int) -> Detection:
    x1, y1, x2, y2 = detection.box
    return replace(detection, box=(x1 + dx, y1 + dy, x2 + dx, y2 + dy))
