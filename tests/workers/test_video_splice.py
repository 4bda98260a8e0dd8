"""Splicing re-encoded GOPs into an encoded chunk: which GOPs a change touches, and that a
segment which does not fit exactly is refused rather than joined."""

from __future__ import annotations

import io
from dataclasses import replace
from fractions import Fraction

import av
import numpy as np
import pytest

from tests.videos import frame_packets
from workers.video.encode import ChunkEncoder, EncoderSettings
from workers.video.splice import SpliceError, SplicingEncoder, plan_splice

SETTINGS = EncoderSettings(codec="libx264", crf=23, preset="superfast", width=64, height=48,
                           time_base="1/10", rate="10", keyint=10, threads=1)
FRAMES = 40  # keyframes at 0, 10, 20 and 30 (frame i at i/10 s)


def _image(index: int, shade: int = 0) -> np.ndarray:
    image = np.full((48, 64, 3), 80 + shade, np.uint8)  # calm: no scene cut, no extra IDR
    image[20:28, index:index + 8] = 200  # a square that moves
    return image


def _encode(settings: EncoderSettings = SETTINGS) -> bytes:
    encoder = ChunkEncoder(settings)
    for index in range(FRAMES):
        encoder.write(_image(index), index, 1, key=index % 10 == 0)
    return encoder.finish()


def _times(*indices: int) -> list[Fraction]:
    return [Fraction(i, 10) for i in indices]


@pytest.fixture(scope="module")
def base() -> bytes:
    return _encode()


def test_a_change_takes_its_whole_gop_and_adjacent_gops_merge(base: bytes) -> None:
    assert plan_splice(base, _times(5)).segments == [(Fraction(0), Fraction(1))]
    assert plan_splice(base, _times(25, 31)).segments == [(Fraction(2), None)]
    assert plan_splice(base, _times(9, 30)).segments == [(Fraction(0), Fraction(1)),
                                                         (Fraction(3), None)]
    assert plan_splice(base, _times(10, 19, 20)).segments == [(Fraction(1), Fraction(3))]


def test_a_spliced_chunk_holds_the_new_frames_and_the_old_packets_elsewhere(
        base: bytes) -> None:
    # given a re-run that changes frames 12 and 14 (GOP 10-19)
    encoder = SplicingEncoder(SETTINGS, plan_splice(base, _times(12, 14)))
    for index in range(FRAMES):
        if encoder.encodes(index):
            encoder.write(_image(index, shade=100 if index in (12, 14) else 0), index, 1)
    # then only frames 10-19 were encoded again, and the chunk holds every frame once
    assert encoder.frames == 10
    spliced = encoder.finish()
    old, new = frame_packets(base, 10), frame_packets(spliced, 10)
    assert sorted(new) == list(range(FRAMES))
    assert all(new[i] == old[i] for i in [*range(10), *range(20, FRAMES)])
    with av.open(io.BytesIO(spliced), mode="r") as container:
        decoded = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert len(decoded) == FRAMES
    assert abs(decoded[12][5, 5] - 180) < 5  # the new picture
    assert abs(decoded[11][5, 5] - 80) < 5 and abs(decoded[25][5, 5] - 80) < 5


def test_a_segment_with_another_parameter_set_is_refused(base: bytes) -> None:
    # given a segment from an encoder with other settings (ultrafast: no CABAC, other PPS)
    other = replace(SETTINGS, preset="ultrafast")
    encoder = SplicingEncoder(other, plan_splice(base, _times(3)))
    for index in range(10):
        encoder.write(_image(index), index, 1)
    with pytest.raises(SpliceError, match="another H.264 parameter set"):
        encoder.finish()


def test_a_segment_missing_a_frame_is_refused(base: bytes) -> None:
    encoder = SplicingEncoder(SETTINGS, plan_splice(base, _times(3)))
    for index in range(9):  # frame 9 never comes
        encoder.write(_image(index), index, 1)
    with pytest.raises(SpliceError, match="does not hold the frames of the old one"):
        encoder.finish()
