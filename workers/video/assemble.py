"""Join redacted chunks into the deliverable MP4: the assemble stage.

Chunks are joined by stream copy (no re-encoding), which is exact because every chunk was
encoded with identical settings, carries the original frame timestamps and has no B-frames
(``workers.video.encode``). Before anything is written the join is checked, so a wrong plan or a
chunk from another encoder fails the job instead of shipping a broken file: the chunks must
share one H.264 parameter set, rise monotonically in time and hold exactly the probed number of
frames.

What the output does not carry: container and stream metadata tags (title, creation time,
location, encoder), data, subtitle and attachment streams, and the display rotation (the pixels
were turned upright before detection). Audio is dropped by default (voices are personal data);
with ``audio = "keep"`` every audio stream of the original is copied with its own timestamps, so
it stays in sync, or re-encoded to AAC when MP4 cannot carry its codec.
"""

from __future__ import annotations

import heapq
import io
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av

from infra.video_probe import ProbeError, VideoInfo, VideoSource, open_video
from workers.imageio import BadInputError

OUTPUT_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}
COPYABLE_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


class AssemblyError(Exception):
    """The chunks cannot be joined into an exact copy; retrying does not help."""


@dataclass
class Assembled:
    data: bytes
    frames: int
    audio_streams: int
    duration_s: float


def assemble(chunks: Sequence[bytes], info: VideoInfo, original: VideoSource | None,
             keep_audio: bool) -> Assembled:
    """One MP4 from the chunk MP4s in order (plus the original's audio when kept)."""
    if keep_audio and original is None:
        raise ValueError("keeping audio needs the original")
    with tempfile.TemporaryDirectory(prefix="veil-assemble-") as folder:
        path = Path(folder) / "out.mp4"  # faststart rewrites the file: it needs a real path
        with av.open(str(path), "w", format="mp4", options=OUTPUT_OPTIONS) as out:
            inputs = [av.open(io.BytesIO(chunk), mode="r") for chunk in chunks]
            source = _open_original(original) if keep_audio else None
            try:
                frames, audio_streams, end = _mux(out, inputs, source, info)
            finally:
                for container in inputs:
                    container.close()
                if source is not None:
                    source.close()
        data = path.read_bytes()
    return Assembled(data, frames, audio_streams, end)


def _open_original(original: VideoSource | None) -> av.container.InputContainer:
    assert original is not None
    try:
        return open_video(original)
    except ProbeError as exc:
        raise BadInputError(f"the original does not open for its audio: {exc}") from exc


def _mux(out: av.container.OutputContainer, inputs: list[av.container.InputContainer],
         source: av.container.InputContainer | None, info: VideoInfo) -> tuple[int, int, float]:
    video_out = _video_output(out, inputs, info)
    audio_pairs = [] if source is None else \
        [(audio, _audio_output(out, audio)) for audio in source.streams.audio]
    out.metadata.clear()
    for stream in out.streams:
        stream.metadata.clear()
    feeds = [_video_packets(inputs, video_out)]
    feeds += [_copied_packets(source, audio, target)  # type: ignore[arg-type]
              for audio, (target, copy) in audio_pairs if copy]
    counter = _Counter()
    for _, packet in heapq.merge(*feeds, key=lambda item: item[0]):
        if packet.stream is video_out:
            counter.video(packet, info)
        out.mux(packet)
    for audio, (target, copy) in audio_pairs:
        if not copy:
            _transcode(source, audio, target, out)  # type: ignore[arg-type]
    if counter.frames != info.frame_count:
        raise AssemblyError(f"the chunks hold {counter.frames} frames, the source has "
                            f"{info.frame_count}; refusing to publish an incomplete video")
    return counter.frames, len(audio_pairs), counter.end_s


def _video_output(out: av.container.OutputContainer, inputs: list[av.container.InputContainer],
                  info: VideoInfo) -> av.video.stream.VideoStream:
    """The output's video stream, after checking that every chunk shares chunk 0's settings
    (joining is a stream copy, so one parameter set must serve them all)."""
    if not inputs:
        raise AssemblyError("no chunk to assemble")
    template = inputs[0].streams.video[0]
    for index, container in enumerate(inputs):
        if container.streams.video[0].codec_context.extradata \
                != template.codec_context.extradata:
            raise AssemblyError(f"chunk {index} was encoded with other settings than chunk 0 "
                                "(a node with another encoder?); the chunks cannot be joined")
    video_out = out.add_stream_from_template(template)
    video_out.time_base = info.tb
    return video_out  # type: ignore[return-value]


class _Counter:
    def __init__(self) -> None:
        self.frames, self.end_s = 0, 0.0
        self.last: Fraction | None = None

    def video(self, packet: av.Packet, info: VideoInfo) -> None:
        time = Fraction(packet.pts or 0) * Fraction(packet.time_base)
        if self.last is not None and time <= self.last:
            raise AssemblyError(f"frame {self.frames} at {float(time):.3f} s does not follow "
                                f"the previous one at {float(self.last):.3f} s")
        self.last = time
        self.frames += 1
        self.end_s = float(time + Fraction(packet.duration or 0) * Fraction(packet.time_base))


def _video_packets(inputs: list[av.container.InputContainer],
                   target: av.video.stream.VideoStream) -> Iterator[tuple[Fraction, av.Packet]]:
    for container in inputs:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            time = Fraction(packet.dts if packet.dts is not None else packet.pts) \
                * Fraction(packet.time_base)
            packet.stream = target
            yield time, packet


def _audio_output(out: av.container.OutputContainer,
                  stream: av.audio.stream.AudioStream) -> tuple[av.stream.Stream, bool]:
    name = stream.codec_context.codec.canonical_name  # the format, not the decoder (mp3float)
    if name in COPYABLE_AUDIO:
        copied = out.add_stream_from_template(stream)
        copied.time_base = stream.time_base
        return copied, True
    target = cast(av.audio.stream.AudioStream,
                  out.add_stream("aac", rate=stream.codec_context.sample_rate or 48000))
    target.layout = _aac_layout(stream.codec_context.layout)
    return target, False


_NAMED_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 8: "7.1"}


def _aac_layout(layout: av.AudioLayout) -> str:
    """A channel layout the AAC encoder takes. PCM in AVI or WAV-style streams often declare
    only a count ("1 channels"), which the encoder refuses: such a stream gets the usual layout
    for its count (the resampler maps the channels), and a count AAC has no layout for is
    mixed down to stereo."""
    if layout.name in _NAMED_LAYOUTS.values():
        return str(layout.name)
    return _NAMED_LAYOUTS.get(layout.nb_channels, "stereo")


def _copied_packets(source: av.container.InputContainer, stream: av.audio.stream.AudioStream,
                    target: av.stream.Stream) -> Iterator[tuple[Fraction, av.Packet]]:
    source.seek(0)
    for packet in source.demux(stream):
        if packet.size == 0 or (packet.pts is None and packet.dts is None):
            continue
        stamp = packet.dts if packet.dts is not None else packet.pts
        packet.stream = target  # type: ignore[assignment]
        yield Fraction(stamp or 0) * Fraction(packet.time_base), packet


def _transcode(source: av.container.InputContainer, stream: av.audio.stream.AudioStream,
               target: av.audio.stream.AudioStream, out: av.container.OutputContainer) -> None:
    """Re-encode an audio stream MP4 cannot carry as AAC, keeping its timestamps."""
    source.seek(0)
    resampler = av.AudioResampler(format="fltp", layout=target.layout, rate=target.rate)
    try:
        for frame in source.decode(stream):
            for resampled in resampler.resample(frame):
                for packet in target.encode(resampled):
                    out.mux(packet)
        for resampled in resampler.resample(None):
            for packet in target.encode(resampled):
                out.mux(packet)
        for packet in target.encode(None):
            out.mux(packet)
    except av.error.FFmpegError as exc:
        raise BadInputError(f"the audio stream does not decode: {exc}") from exc
