"""Chunk planning: every frame in exactly one chunk, whatever the timestamps."""

from __future__ import annotations

from fractions import Fraction

import pytest

from producer.chunk_plan import plan_chunks
from schemas.chunks import ChunkPlan, FramePacket

TB = Fraction(1, 12800)  # 25 fps: 512 ticks a frame


def _cfr(frames: int, gop: int = 25) -> list[FramePacket]:
    return [FramePacket(i * 512, i * 512, i % gop == 0) for i in range(frames)]


def _owner(plans: list[ChunkPlan], pts: int) -> list[int]:
    return [p.index for p in plans if p.contains(pts)]


def test_every_frame_belongs_to_exactly_one_chunk_and_counts_add_up() -> None:
    packets = _cfr(730)
    plans = plan_chunks(packets, TB, 10.0)
    assert [p.frame_count for p in plans] == [250, 250, 230]
    assert all(len(_owner(plans, p.pts)) == 1 for p in packets)
    assert [p.first_frame for p in plans] == [0, 250, 500]
    assert plans[0].start_pts is None and plans[-1].end_pts is None


def test_a_video_exactly_one_chunk_long_is_one_chunk_and_a_frame_on_a_boundary_starts_the_next(
) -> None:
    assert len(plan_chunks(_cfr(250), TB, 10.0)) == 1  # last frame at 9.96 s
    plans = plan_chunks(_cfr(251), TB, 10.0)  # frame 250 is exactly at 10.0 s
    assert [p.frame_count for p in plans] == [250, 1]
    assert plans[1].first_pts == 250 * 512 == plans[1].start_pts


def test_shorter_than_one_chunk() -> None:
    plans = plan_chunks(_cfr(7), TB, 10.0)
    assert [(p.frame_count, p.seek_ts) for p in plans] == [(7, None)]


def test_a_gap_longer_than_a_chunk_makes_no_empty_chunk() -> None:
    # variable frame rate: 1 s of frames, 35 s of nothing, 1 s of frames
    packets = [FramePacket(t, t, True) for t in [*range(0, 12800, 512),
                                                  *range(36 * 12800, 37 * 12800, 512)]]
    plans = plan_chunks(packets, TB, 10.0)
    assert all(p.frame_count > 0 for p in plans)
    assert sum(p.frame_count for p in plans) == len(packets)


def test_seek_point_is_a_keyframe_that_decodes_every_frame_of_the_chunk_with_b_frames() -> None:
    # decode order I P B B P B B ...: B-frames are shown before the P decoded ahead of them
    shown = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8, 12, 10, 11]
    keyframes = {0, 6}  # decode positions 0 and 6 (pts 5 is a keyframe shown after pts 4)
    packets = [FramePacket(pts, i - 1, i in keyframes) for i, pts in enumerate(shown)]
    plans = plan_chunks(packets, Fraction(1), 4.0, warmup_frames=0)
    assert [(p.first_pts, p.frame_count) for p in plans] == [(0, 4), (4, 4), (8, 4), (12, 1)]
    # pts 6 (shown in chunk 1) is decoded at position 4, before the keyframe at 6: seek to 0
    assert plans[1].seek_ts == -1
    # pts 8 is decoded at position 9, after the keyframe (pts 5) at 6 that is shown before it
    assert plans[2].seek_ts == 5
    # with warm-up frames the seek point also decodes the frames before the chunk: chunk 3
    # (pts 12) with 2 warm-up frames needs pts 10 (decode position 11, keyframe at 6: pts 5);
    # with 4 it needs pts 8 and 9, and pts 8 is decoded after that keyframe too
    warm = plan_chunks(packets, Fraction(1), 4.0, warmup_frames=2)
    assert warm[3].seek_ts == 5 and plans[3].seek_ts == 5
    assert plan_chunks(packets, Fraction(1), 4.0, warmup_frames=5)[3].seek_ts == 5
    assert plan_chunks(packets, Fraction(1), 4.0, warmup_frames=7)[3].seek_ts == -1


def test_plan_round_trips_through_json_and_bad_input_is_refused() -> None:
    plan = plan_chunks(_cfr(300), TB, 4.0)[1]
    assert ChunkPlan.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="no frames"):
        plan_chunks([], TB, 10.0)
    with pytest.raises(ValueError, match="positive"):
        plan_chunks(_cfr(3), TB, 0.0)


def test_a_short_video_is_split_into_several_chunks_a_long_one_keeps_the_policy_length() -> None:
    from producer.chunk_plan import chunk_seconds_for
    from schemas.chunks import MIN_CHUNK_S

    assert chunk_seconds_for(30.0, 10.0) == 7.5  # about 4 chunks for a node's processes
    assert chunk_seconds_for(3600.0, 10.0) == 10.0
    assert chunk_seconds_for(6.0, 10.0) == MIN_CHUNK_S  # never shorter than that
    assert chunk_seconds_for(30.0, 0.4) == 0.4  # a shorter policy length is kept
    assert chunk_seconds_for(30.0, 10.0, parts=2) == 10.0


def test_a_low_frame_rate_stretches_the_policy_length_to_enough_frames() -> None:
    from producer.chunk_plan import chunk_seconds_for
    from schemas.chunks import MIN_CHUNK_FRAMES

    # a 10-fps camera: 10-s chunks would hold 100 frames, each re-detecting 19 around it
    assert chunk_seconds_for(3600.0, 10.0, frame_rate=10.0) == MIN_CHUNK_FRAMES / 10.0
    assert chunk_seconds_for(139.4, 10.0, frame_rate=10.0) == 20.0
    assert chunk_seconds_for(3600.0, 10.0, frame_rate=25.0) == 10.0  # 250 frames already
    assert chunk_seconds_for(3600.0, 60.0, frame_rate=10.0) == 60.0  # a longer policy stays
    assert chunk_seconds_for(30.0, 10.0, frame_rate=10.0) == 7.5  # short videos as before
    assert chunk_seconds_for(30.0, 0.4, frame_rate=10.0) == 0.4


def test_veil_redact_plans_about_two_chunks_per_process_whatever_the_policy_length() -> None:
    from types import SimpleNamespace

    from producer.redact_video import LOCAL_MAX_CHUNK_S, local_chunk_seconds
    from schemas.chunks import MIN_CHUNK_S
    from schemas.policy import Policy

    policy = Policy(name="t", raw_retention_s=60, chunk_seconds=10.0)

    def seconds(duration: float, processes: int = 2, chunk: Policy = policy) -> float:
        return local_chunk_seconds(SimpleNamespace(duration_s=duration),  # type: ignore[arg-type]
                                   chunk, processes)

    assert seconds(30.0) == 7.5  # 4 chunks for 2 processes
    assert seconds(139.4) == 139.4 / 4  # longer than the policy's 10 s: fewer warm-ups
    assert seconds(3600.0) == LOCAL_MAX_CHUNK_S  # bounded: outputs wait in memory
    assert seconds(6.0) == MIN_CHUNK_S
    assert seconds(3600.0, chunk=policy.model_copy(update={"chunk_seconds": 120.0})) == 120.0
    assert seconds(30.0, chunk=policy.model_copy(update={"chunk_seconds": 0.4})) == 0.4


def test_ingest_plans_a_10_fps_video_in_chunks_of_enough_frames() -> None:
    from infra.policies import get_policy
    from infra.settings import get_settings
    from producer.video_plan import plan_video
    from schemas.chunks import MIN_CHUNK_FRAMES
    from tests.videos import VideoSpec, make_video

    # a 100-s clip from a 10-fps camera, default policy (10-s chunks)
    video = make_video(VideoSpec(frames=1000, fps=10, width=96, height=96, gop=20, bframes=0))
    plan = plan_video(video, get_policy(None), get_settings())
    assert plan.error is None
    assert [c.frame_count for c in plan.chunks] == [MIN_CHUNK_FRAMES] * 5
