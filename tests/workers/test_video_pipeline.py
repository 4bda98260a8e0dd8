"""The chunk and assemble stages as plain functions (no services), on generated videos with the
hazards of real camera files: every output frame is an input frame, once, at its original time,
upright, with the face destroyed, in a clean MP4."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import pytest

from infra.settings import get_settings
from infra.video_probe import VideoInfo, probe_video
from producer.chunk_plan import plan_chunks
from schemas.policy import Policy
from tests.videos import (
    VideoSpec,
    decode_video,
    face_core,
    face_destroyed,
    make_video,
)
from workers import runtime
from workers.imageio import BadInputError
from workers.video.assemble import assemble
from workers.video.chunk import ChunkWork, redact_chunk

POLICY = Policy(name="video-test", raw_retention_s=3600, classes=["face"], chunk_seconds=0.4)
CLEAN_TAGS = {"major_brand", "minor_version", "compatible_brands"}  # the MP4 brand, from ftyp


def redact_in_process(data: bytes, policy: Policy = POLICY) -> tuple[bytes, VideoInfo, int]:
    info, packets = probe_video(data, get_settings().limits.max_image_pixels)
    plans = plan_chunks(packets, info.tb, policy.chunk_seconds)
    chunks = [redact_chunk(ChunkWork(data, info, plan, policy, runtime.detector(),
                                     get_settings().video))
              for plan in plans]
    joined = assemble([c.data for c in chunks], info, data, policy.audio == "keep")
    return joined.data, info, len(plans)


HAZARDS = {
    "b-frames": VideoSpec(frames=30, bframes=3),
    "variable frame rate": VideoSpec(frames=30, vfr=True, time_base=Fraction(1, 1000)),
    "rotated 90": VideoSpec(frames=30, rotation=90),
    "rotated 270": VideoSpec(frames=30, rotation=270),
    "hevc": VideoSpec(frames=30, codec="libx265"),
    "odd dimensions": VideoSpec(frames=30, width=161, height=121, pix_fmt="yuv444p"),
    "matroska with subtitles and attachment": VideoSpec(
        frames=30, container="matroska", subtitle=True, attachment=True, title="Jane Roe"),
    "mpeg-ts with a data stream": VideoSpec(frames=30, container="mpegts", data=True),
    # AVI stores one timestamp per packet in decode order: with B-frames the decoder hands out
    # frames whose timestamps are out of order (DVR exports, Xvid)
    "avi with b-frames": VideoSpec(frames=30, container="avi", time_base=Fraction(1, 25)),
}


@pytest.mark.parametrize("name", list(HAZARDS))
def test_output_is_frame_exact_upright_redacted_and_clean(name: str) -> None:
    # given a generated video with a hazard, split into chunks of 10 frames
    spec = HAZARDS[name]
    data = make_video(spec)
    # when every chunk is redacted and the chunks are assembled
    output, info, chunks = redact_in_process(data)
    assert chunks >= 2
    # then the viewer sees the same frames (by their barcodes) at the same times, upright
    before, after = decode_video(data, keep_frames=True), decode_video(output, keep_frames=True)
    assert after.indices == before.indices == list(range(spec.frames))
    assert after.times == before.times
    assert abs(after.duration - before.duration) <= Fraction(1, spec.fps)
    width, height = after.size
    assert (width - spec.width, height - spec.height) in {(0, 0), (1, 1)}  # odd sizes padded
    assert after.rotation == 0
    # with the face destroyed in every frame
    for index, (a, b) in enumerate(zip(before.frames, after.frames, strict=True)):
        assert face_destroyed(a, b, face_core(index, spec.width, spec.height)), index
    # and one H.264 stream, no tags, nothing of the original's other streams
    with av.open(io.BytesIO(output)) as container:
        assert [(s.type, s.codec_context.name) for s in container.streams] == [("video", "h264")]
        assert set(container.metadata) <= CLEAN_TAGS
    assert b"Jane Roe" not in output and b"GPS" not in output


def test_audio_is_dropped_by_default_and_kept_in_sync_when_the_policy_says_so() -> None:
    spec = VideoSpec(frames=30, audio=True, title="Secret Title",
                     creation_time="2021-05-04T10:00:00Z")
    data = make_video(spec)
    dropped, _, _ = redact_in_process(data)
    kept, _, _ = redact_in_process(data, POLICY.model_copy(update={"audio": "keep"}))
    with av.open(io.BytesIO(dropped)) as container:
        assert not container.streams.audio
    assert _audio_times(kept) == _audio_times(data)  # same packets at the same times
    assert _first_video_time(kept) == _first_video_time(data)
    for output in (dropped, kept):
        assert b"Secret Title" not in output and b"2021-05-04" not in output
        with av.open(io.BytesIO(output)) as container:
            assert set(container.metadata) <= CLEAN_TAGS
            assert "creation_time" not in container.streams.video[0].metadata


def test_a_repeated_timestamp_fails_the_chunk_with_a_reason() -> None:
    # given an MPEG-TS whose frame 15 repeats frame 14's timestamp (a broken DVR export)
    source = make_video(VideoSpec(frames=30, bframes=0, container="mpegts",
                                  time_base=Fraction(1, 90000)))
    buffer = io.BytesIO()
    with av.open(io.BytesIO(source)) as original, \
            av.open(buffer, "w", format="mpegts") as broken:
        stream = original.streams.video[0]
        target = broken.add_stream_from_template(stream)
        packets = [p for p in original.demux(stream) if p.size]
        step = packets[1].pts - packets[0].pts
        for index, packet in enumerate(packets):
            packet.dts = packet.pts - 2 * step  # decode times still rise
            if index == 15:
                packet.pts = packets[14].pts
            packet.stream = target
            broken.mux(packet)
    data = buffer.getvalue()
    # when it is redacted, then its chunk fails and says why (not with a muxer error)
    with pytest.raises(BadInputError, match="two frames share a timestamp or come out of order"):
        redact_in_process(data, POLICY.model_copy(update={"chunk_seconds": 10}))


def test_pcm_audio_from_an_avi_camera_is_kept_as_aac_in_sync() -> None:
    # given an AVI with B-frames and PCM audio that declares only its channel count, as DVR
    # exports do
    spec = VideoSpec(frames=30, container="avi", time_base=Fraction(1, 25), audio=True,
                     audio_codec="pcm_s16le")
    data = make_video(spec)
    with av.open(io.BytesIO(data)) as container:
        assert container.streams.audio[0].codec_context.layout.name == "1 channels"
    # when the policy keeps audio
    kept, _, _ = redact_in_process(data, POLICY.model_copy(update={"audio": "keep"}))
    # then the output carries it as AAC (MP4 does not take this PCM), from the same start and
    # for the same length, next to the same frames
    with av.open(io.BytesIO(kept)) as container:
        audio = container.streams.audio[0]
        assert (audio.codec_context.name, audio.codec_context.layout.name) == ("aac", "mono")
    times, source_times = _audio_times(kept), _audio_times(data)
    assert abs(times[0] - source_times[0]) <= Fraction(1024, 48000)  # one AAC frame
    assert abs(_audio_end(kept) - _audio_end(data)) <= Fraction(1024, 48000)
    assert decode_video(kept).indices == list(range(spec.frames))
    assert _first_video_time(kept) == _first_video_time(data)


def test_mp3_audio_is_copied_not_re_encoded() -> None:
    # given a Matroska file with MP3 audio (FFmpeg decodes it as "mp3float")
    data = make_video(VideoSpec(frames=30, container="matroska", audio=True,
                                audio_codec="libmp3lame"))
    # when the policy keeps audio, then the same MP3 packets are in the output
    kept, _, _ = redact_in_process(data, POLICY.model_copy(update={"audio": "keep"}))
    with av.open(io.BytesIO(kept)) as container:
        assert container.streams.audio[0].codec_context.codec.canonical_name == "mp3"
    assert _audio_payloads(kept) == _audio_payloads(data)


def _audio_payloads(data: bytes) -> list[bytes]:
    with av.open(io.BytesIO(data)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def _audio_end(data: bytes) -> Fraction:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return max((Fraction(p.pts) + Fraction(p.duration or 0)) * Fraction(p.time_base)
                   for p in container.demux(stream) if p.size and p.pts is not None)


def _audio_times(data: bytes) -> list[Fraction]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return [Fraction(p.pts) * Fraction(p.time_base) for p in container.demux(stream)
                if p.size]


def _first_video_time(data: bytes) -> Fraction:
    return decode_video(data).times[0]


def test_the_chunk_holding_a_corrupt_frame_fails_on_its_own() -> None:
    # given a video whose middle is garbled (the decoder conceals the damage and says so on
    # the frame), cut into chunks of 10 frames
    data = bytearray(make_video(VideoSpec(frames=40, gop=10, seed=41)))
    middle = data.find(b"mdat") + (len(data) - data.find(b"mdat")) // 2
    data[middle:middle + 3000] = bytes((b * 7 + 13) & 255 for b in data[middle:middle + 3000])
    corrupt = bytes(data)
    with av.open(io.BytesIO(corrupt)) as container:
        flagged = [i for i, f in enumerate(container.decode(video=0)) if f.is_corrupt]
    assert flagged
    info, packets = probe_video(corrupt, get_settings().limits.max_image_pixels)
    plans = plan_chunks(packets, info.tb, POLICY.chunk_seconds)
    plan = next(p for p in plans if p.first_frame <= flagged[0] < p.first_frame + p.frame_count)
    # when that chunk alone is redacted (as a worker that picks it up first would), then it
    # fails: with B-frames the decoder reports the damage while it still hands out the frames
    # before the range, so the frame's own flag is what tells
    with pytest.raises(BadInputError, match=f"chunk {plan.index}: .*corrupt"):
        redact_chunk(ChunkWork(corrupt, info, plan, POLICY, runtime.detector(),
                               get_settings().video))
