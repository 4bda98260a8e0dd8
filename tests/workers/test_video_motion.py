"""The motion gate (workers/video/motion.py): between full passes a static camera's frames are
detected only where they changed, and that must find what detecting every frame whole finds.

A test detector that reports pure-white rectangles sees a crop exactly as it sees the frame, so
the gate's detections can be compared box for box with full detection; the real face detector
then runs on a static-camera video with a moving face.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from infra.settings import get_settings
from infra.video_probe import probe_video
from producer.chunk_plan import plan_chunks
from schemas.policy import Policy
from tests.videos import VideoSpec, face_box, make_video
from tests.workers.fake_detector import FakeFaceDetector
from workers.detectors.base import Detection, Detector
from workers.video.chunk import ChunkWork, redact_chunk
from workers.video.motion import MotionGate

W, H = 320, 240
Box = tuple[float, float, float, float]


class WhiteBoxes(FakeFaceDetector):
    """Reports every pure-white connected region as a face; a crop shows the same regions."""

    key = "white-boxes"

    def __init__(self, crops: bool = True) -> None:
        super().__init__()
        self.crops, self.calls, self.pixels = crops, 0, 0

    def sees_crops(self, classes: Any, height: int, width: int) -> bool:
        return self.crops

    def _detect_batch(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        self.calls += len(frames)
        found = []
        for frame in frames:
            self.pixels += frame.shape[0] * frame.shape[1]
            white = np.all(frame >= 250, axis=2).astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(white, connectivity=8)
            found.append([Detection("face", 0.9, (float(x), float(y), float(x + w), float(y + h)))
                          for x, y, w, h, _ in stats[1:count].tolist()])
        return found


def _scene(seed: int = 0) -> NDArray[np.uint8]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 200, (H, W, 3), dtype=np.uint8)  # never pure white


def _with_box(frame: NDArray[np.uint8], x: int, y: int, w: int, h: int) -> NDArray[np.uint8]:
    out = frame.copy()
    out[y:y + h, x:x + w] = 255
    return out


def _gated(frames: list[NDArray[np.uint8]], every: int = 8, batch: int = 8,
           resync: set[int] | None = None) -> tuple[list[list[Box]], MotionGate, WhiteBoxes]:
    detector = WhiteBoxes()
    gate = MotionGate(every, detector.detect_batch, resync or set())
    boxes: list[list[Box]] = []
    for start in range(0, len(frames), batch):
        part = frames[start:start + batch]
        boxes += [sorted(d.box for d in dets)
                  for dets in gate.run(list(range(start, start + len(part))), part)]
    return boxes, gate, detector


def _whole(frames: list[NDArray[np.uint8]]) -> list[list[Box]]:
    return [sorted(d.box for d in dets) for dets in WhiteBoxes().detect_batch(frames)]


def test_a_moving_box_on_a_static_scene_is_found_in_every_frame_from_crops() -> None:
    # given a fixed camera and a box walking 3 px a frame, 40 frames in batches of 8
    scene = _scene()
    frames = [_with_box(scene, 20 + 3 * i, 100, 30, 36) for i in range(40)]
    boxes, gate, detector = _gated(frames)
    # then every frame has exactly the box full detection finds, though most were cropped
    assert boxes == _whole(frames)
    assert gate.counts.full == 5 and gate.counts.cropped == 35
    # (5 full passes are 1/8 of the pixels; the crops, 12,288 px of 76,800, about 1/6 more)
    assert detector.pixels < 0.4 * 40 * W * H
    assert gate.params()["detected_share"] == round(detector.pixels / (40 * W * H), 3)


def test_a_box_appearing_between_full_passes_is_found_in_its_first_frame() -> None:
    scene = _scene(1)
    frames = [scene] * 3 + [_with_box(scene, 200, 40, 24, 24)] * 5
    boxes, gate, _ = _gated(frames)
    assert boxes[2] == [] and boxes[3] == [(200.0, 40.0, 224.0, 64.0)]
    assert boxes == _whole(frames)
    # (the reference stays the full pass of frame 0: the frames after 3 are cropped, too)
    assert gate.counts.full == 1 and gate.counts.unchanged == 2 and gate.counts.cropped == 5


def test_a_box_changing_only_in_part_is_detected_whole_not_cut_by_its_crop() -> None:
    # given a large box from the full pass, and later a small dark mark moving inside its corner:
    # the changed pixels alone would make a crop that cuts the box
    scene = _scene(2)
    big = _with_box(scene, 100, 40, 180, 160)
    frames = [big]
    for i in range(1, 8):
        frame = big.copy()
        frame[44:50, 104 + 2 * i:110 + 2 * i] = 0
        frames.append(frame)
    boxes, gate, _ = _gated(frames)
    # then each frame still reports the whole box (grown crop), as full detection does
    assert boxes == _whole(frames)
    assert gate.counts.cropped == 7


def test_a_cut_or_a_moving_camera_gets_full_passes() -> None:
    # given a cut at frame 5 and, after it, a camera panning 4 px a frame
    first, second = _scene(3), _scene(4)
    frames = [_with_box(first, 50, 50, 30, 30)] * 5
    frames += [np.roll(_with_box(second, 150, 60, 30, 30), 4 * i, axis=1) for i in range(11)]
    boxes, gate, _ = _gated(frames)
    assert boxes == _whole(frames)
    # then frame 5 and the panning frames are detected whole (only frame 0 has a reference
    # of the first scene, the four after it are unchanged)
    assert gate.counts.unchanged == 4 and gate.counts.full == 12


def test_full_passes_fall_on_multiples_of_every_and_on_resync_frames() -> None:
    scene = _scene(5)
    frames = [scene] * 20
    calls = []

    def detect(images: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        calls.append(len(images))
        return [[] for _ in images]

    gate = MotionGate(8, detect, {13})
    for start in (3, 11, 19):  # a chunk starting at frame 3, batches of 8
        gate.run(list(range(start, start + 8)), frames[:8])
    # first frame seen (3), 8, 13 (resync), 16, 24; nothing changed elsewhere
    assert gate.counts.full == 5 and gate.counts.unchanged == 19
    assert sum(calls) == 5


class CropBiased(WhiteBoxes):
    """Like WhiteBoxes, but a crop's boxes come back 2 px larger on each side: a detector that
    sees crops almost, not exactly, as it sees the frame (as a real one does at crop edges)."""

    def _detect_batch(self, frames: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
        found = super()._detect_batch(frames)
        return [dets if frame.shape[:2] == (H, W) else
                [Detection(d.cls, d.score, (d.box[0] - 2, d.box[1] - 2, d.box[2] + 2,
                                            d.box[3] + 2)) for d in dets]
                for frame, dets in zip(frames, found, strict=True)]


def _chunk_gate(frames: list[NDArray[np.uint8]], first: int, resync: set[int]
                ) -> dict[int, list[Box]]:
    """One chunk's gate from frame ``first`` on, in batches of 8 as a chunk runs it."""
    gate = MotionGate(8, CropBiased().detect_batch, resync)
    out: dict[int, list[Box]] = {}
    for start in range(first, len(frames), 8):
        part = frames[start:start + 8]
        indices = list(range(start, start + len(part)))
        out.update(zip(indices, ([sorted(d.box for d in dets)
                                  for dets in gate.run(indices, part)]), strict=True))
    return out


def test_both_chunks_detect_the_hand_over_frames_alike_because_of_the_resync() -> None:
    # given a box walking across a fixed camera's view, and a chunk boundary whose next chunk
    # starts its tracker (and its own gate, with a full pass) at frame 29, between full passes
    scene = _scene(7)
    frames = [_with_box(scene, 20 + 3 * i, 100, 30, 36) for i in range(48)]
    handover = 29
    nxt = _chunk_gate(frames, handover, set())
    # then this chunk, re-syncing its gate there, detects every shared frame as the next does
    this = _chunk_gate(frames, 0, {handover})
    assert {i: this[i] for i in nxt} == nxt
    # (without the resync it would not: frame 29 would come from a crop here, whole there)
    unsynced = _chunk_gate(frames, 0, set())
    assert unsynced[handover] != nxt[handover]


def test_every_one_detects_every_frame_whole() -> None:
    scene = _scene(6)
    frames = [_with_box(scene, 10 + i, 10, 20, 20) for i in range(16)]
    boxes, gate, detector = _gated(frames, every=1)
    assert boxes == _whole(frames)
    assert detector.calls == 16 and detector.pixels == 16 * W * H
    assert gate.params() == {"full_detect_every": 1, "action": "off"}


def _chunks(data: bytes, policy: Policy, detector: Detector) -> tuple[list[list[Box]],
                                                                      list[dict[str, Any]]]:
    info, packets = probe_video(data, get_settings().limits.max_image_pixels)
    plans = plan_chunks(packets, info.tb, policy.chunk_seconds)
    assert len(plans) >= 3
    boxes: list[list[Box]] = []
    gates = []
    for plan in plans:
        out = redact_chunk(ChunkWork(data, info, plan, policy, detector, get_settings().video,
                                     keep_boxes=True))
        boxes += [sorted(b) for b in out.boxes]
        gates.append(out.params["motion_gate"])
    return boxes, gates


POLICY = Policy(name="motion-test", raw_retention_s=3600, classes=["face"], chunk_seconds=1.0,
                guard={"enabled": False}, video_detect_long_side=0)


def _white_video(frames: int = 75) -> bytes:
    """A static scene (encoded losslessly) with white boxes that move, appear and vanish."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format="mp4")
    stream = out.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
    stream.codec_context.gop_size = 12
    stream.codec_context.max_b_frames = 0
    stream.codec_context.thread_count = 1
    stream.codec_context.options = {"qp": "0"}  # lossless: the scene is exactly static
    scene = np.full((H, W, 3), 90, np.uint8)
    scene[::8] = 30
    for i in range(frames):
        frame = _with_box(scene, 10 + 2 * i, 60, 32, 40)
        if 20 <= i < 50:
            frame = _with_box(frame, 220, 150, 40, 40)
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
    return buf.getvalue()


def test_chunks_give_the_same_masks_with_and_without_the_gate_boundaries_included() -> None:
    # given a static-camera video in 3 chunks, redacted chunk by chunk as jobs would
    data = _white_video()
    gated, gates = _chunks(data, POLICY, WhiteBoxes())
    whole, _ = _chunks(data, POLICY.model_copy(update={"video_full_detect_every": 1}),
                       WhiteBoxes())
    # then every frame's masks (tracking, gap filling and the hand-over applied) are the same
    assert len(gated) == 75 and gated == whole
    assert all(g["cropped"] > 0 for g in gates), gates
    assert sum(g["detected_share"] for g in gates) / len(gates) < 0.5


def test_each_chunk_re_syncs_on_the_first_frame_the_next_chunk_decodes(monkeypatch: Any) -> None:
    # given the chunks of a video, each recording its gate's resync frames and first frame seen
    seen: list[tuple[set[int], int]] = []

    class Recording(MotionGate):
        def run(self, indices: Sequence[int],
                images: Sequence[NDArray[np.uint8]]) -> list[list[Detection]]:
            if self._reference is None:
                seen.append((set(self.resync), indices[0]))
            return super().run(indices, images)

    monkeypatch.setattr("workers.video.chunk.MotionGate", Recording)
    _chunks(_white_video(), POLICY, WhiteBoxes())
    # then a chunk's resync is exactly where the next one's gate (and tracker) starts
    assert len(seen) >= 3 and seen[-1][0] == set()
    for (resync, _), (_, first) in zip(seen, seen[1:], strict=False):
        assert resync == {first}, seen


def test_a_detector_that_cannot_see_crops_turns_the_gate_off_and_says_why() -> None:
    data = _white_video(40)
    _, gates = _chunks(data, POLICY.model_copy(update={"chunk_seconds": 0.5}),
                       WhiteBoxes(crops=False))
    assert all(g["action"] == "off" and "white-boxes" in g["why"] for g in gates), gates


def test_a_moving_face_in_a_static_scene_is_found_as_without_the_gate(detector: Detector) -> None:
    # given the real face detector, a fixed camera and a face walking across it
    data = make_video(VideoSpec(frames=75, gop=12, bframes=0, static=True))
    policy = Policy(name="motion-face", raw_retention_s=3600, classes=["face"],
                    chunk_seconds=1.0)
    gated, gates = _chunks(data, policy, detector)
    whole, _ = _chunks(data, policy.model_copy(update={"video_full_detect_every": 1}), detector)
    # then every frame has one box on the face, inside the drawn head and shoulders, and it is
    # the box that detecting every frame whole gives
    assert all(len(frame) == 1 and _inside(frame[0], face_box(i, W, H)) > 0.9
               for i, frame in enumerate(gated)), gated
    assert all(_iou(a[0], b[0]) > 0.9 for a, b in zip(gated, whole, strict=True))
    assert sum(g["cropped"] for g in gates) >= 20, gates


def _inside(box: Box, region: tuple[int, int, int, int]) -> float:
    """The share of the box's area inside the region."""
    w = min(region[2], box[2]) - max(region[0], box[0])
    h = min(region[3], box[3]) - max(region[1], box[1])
    return max(0.0, w) * max(0.0, h) / ((box[2] - box[0]) * (box[3] - box[1]))


def _iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
