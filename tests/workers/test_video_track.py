"""Short-term tracking: a face the detector misses for a few frames stays covered."""

from __future__ import annotations

import numpy as np

from workers.detectors.base import Detection
from workers.video.track import MAX_MISSED, Tracker, iou_matrix


def _face(frame: int) -> Detection:
    x = 100 + 3 * frame  # walking right
    return Detection("face", 0.8, (x, 50, x + 40, 100))


def _covers(boxes: list[Detection], target: Detection) -> bool:
    overlap = iou_matrix(np.array([target.box]), np.array([b.box for b in boxes]).reshape(-1, 4))
    return bool(overlap.size and overlap.max() >= 0.5)


def test_a_face_missed_for_a_few_frames_stays_covered_then_the_track_ends() -> None:
    tracker = Tracker(640, 480)
    seen = {0, 1, 2, 3, 4, 8, 9}  # missed on frames 5, 6 and 7, gone after frame 9
    covered = {}
    for frame in range(20):
        out = tracker.update([_face(frame)] if frame in seen else [], frame)
        covered[frame] = _covers(out, _face(frame)) if out else False
        # a coasting box scores 0: the video guard's chains follow sightings only
        assert [d.score for d in out] == ([0.8] if frame in seen else [0.0] * len(out))
    assert all(covered[f] for f in range(10))  # through the gap: no flicker
    assert all(covered[f] for f in range(10, 10 + MAX_MISSED))  # a little beyond its last sighting
    assert not any(covered[f] for f in range(10 + MAX_MISSED, 20))  # then the mask ends
    records = tracker.records()
    assert len(records) == 1
    assert (records[0].first_frame, records[0].last_frame) == (0, 9 + MAX_MISSED)
    assert records[0].detections == len(seen)


def test_separate_faces_make_separate_tracks_and_a_new_face_is_covered_at_once() -> None:
    tracker = Tracker(640, 480)
    left = Detection("face", 0.9, (10, 10, 50, 60))
    right = Detection("face", 0.9, (400, 10, 440, 60))
    assert len(tracker.update([left], 0)) == 1
    out = tracker.update([left, right], 1)
    assert len(out) == 2 and {d.box for d in out} == {left.box, right.box}
    assert len(tracker.records()) == 2


def test_a_region_back_after_a_short_gap_beyond_tracking_is_filled_in_the_gap() -> None:
    # given a region seen at frame 0 and again at frame 8: the tracker covers it through frame
    # 5 (MAX_MISSED), so frames 6 and 7 would flicker
    from fractions import Fraction

    from schemas.policy import Policy
    from workers.video.chunk import FILL_GAP, _Stage
    from workers.video.decode import DecodedFrame
    from workers.video.encode import ChunkEncoder, EncoderSettings

    assert MAX_MISSED + FILL_GAP >= 8
    encoder = ChunkEncoder(EncoderSettings("libx264", 30, "ultrafast", 64, 64,
                                           str(Fraction(1, 25)), "25", 25, 1))
    stage = _Stage(Tracker(64, 64), encoder, Policy(name="t", raw_retention_s=60), True)
    spot = Detection("face", 0.06, (10, 10, 30, 30))
    frames = [DecodedFrame(i, 1, i, np.zeros((64, 64, 3), np.uint8)) for i in range(12)]
    stage.feed(frames, [[spot] if i in (0, 8) else [] for i in range(12)])
    stage.finish()
    # then every frame from 0 to 8 keeps a box on the region, and the mask ends after that
    covered = [_covers([Detection("face", 0, b) for b in boxes], spot) if boxes else False
               for boxes in stage.boxes]
    assert covered[:9] == [True] * 9
    assert stage.filled == 2


def test_tracks_keep_their_own_history_when_others_end_around_them() -> None:
    # given three faces; the middle one is seen on frames 0-2 only, the others on 0-11
    tracker = Tracker(640, 480)
    left = Detection("face", 0.9, (10, 10, 50, 60))
    middle = Detection("face", 0.7, (200, 10, 240, 60))
    right = Detection("face", 0.8, (400, 10, 440, 60))
    for frame in range(12):
        tracker.update([left, right] if frame > 2 else [left, middle, right], frame)
    # then the middle track ended MAX_MISSED frames after its last sighting, and the tracks
    # around it kept their own counts, scores and extents after it was dropped
    records = {r.score: r for r in tracker.records()}
    assert (records[0.7].first_frame, records[0.7].last_frame) == (0, 2 + MAX_MISSED)
    assert records[0.7].detections == 3 and records[0.7].box[0] < middle.box[0]  # it coasted
    assert (records[0.9].detections, records[0.9].box) == (12, left.box)
    assert (records[0.8].detections, records[0.8].box) == (12, right.box)
    assert {r.score for r in tracker.records(first_frame=2 + MAX_MISSED + 1)} == {0.9, 0.8}


def test_a_coasting_track_moves_on_and_grows_and_a_plate_never_renews_a_face() -> None:
    # given a face moving right 10 px a frame, then lost, and a plate where the face would be
    tracker = Tracker(640, 480)
    for frame in range(4):
        tracker.update([Detection("face", 0.9, (100 + 10 * frame, 50, 140 + 10 * frame, 100))],
                       frame)
    plate = Detection("plate", 0.9, (140, 50, 180, 100))
    out = tracker.update([plate], 4)
    # then the face coasts ahead of its last box, a little larger, beside the plate's own box
    assert out[0] == plate
    (coast,) = [d for d in out[1:] if d.cls == "face"]
    x1, y1, x2, y2 = coast.box
    assert x1 > 130 - 1 and (x2 - x1) > 40 and (y2 - y1) > 50
    assert {r.cls for r in tracker.records()} == {"face", "plate"}
