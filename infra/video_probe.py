"""Probe a video container with PyAV: its streams, timing, rotation and every coded frame.

Shared by the producer (which plans chunks at ingest) and the workers (``veil redact`` plans the
same way in-process), so it lives here rather than in either. Only the demuxer runs over the
whole file (no decoding, about a second per hour of video); one frame is decoded to prove the
codec works and to read the display rotation the decoder applies.

Everything a user can get wrong ends as :class:`ProbeError` with a readable reason: not a video,
no video stream, no frames, frames larger than the pixel limit, timestamps missing, a rotation
that is not a quarter turn.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, BinaryIO

import av

from schemas.chunks import FramePacket


class ProbeError(Exception):
    """The file is not a video Veil can redact; the message says why."""


@dataclass(frozen=True)
class AudioInfo:
    index: int
    codec: str
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class VideoInfo:
    """What the producer records on the source and every chunk job relies on (JSON-ready)."""

    container: str
    codec: str
    width: int  # coded size, before rotation
    height: int
    rotation: int  # counter-clockwise quarter turns in degrees (0, 90, 180, 270) for display
    time_base: str  # "1/12800": all timestamps of the plan are in this unit
    average_rate: str  # "25/1", used as the encoders' nominal frame rate
    frame_count: int
    start_pts: int
    end_pts: int  # last frame's pts plus its duration
    duration_s: float
    audio: list[AudioInfo] = field(default_factory=list)
    dropped_streams: list[str] = field(default_factory=list)  # data, subtitle, attachment...
    creation_time: str | None = None  # the container's tag, as written (capture time)

    @property
    def tb(self) -> Fraction:
        return Fraction(self.time_base)

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown, after rotation."""
        turned = self.rotation in (90, 270)
        return (self.height, self.width) if turned else (self.width, self.height)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VideoInfo:
        audio = [AudioInfo(**a) for a in data.get("audio", [])]
        return cls(**{**data, "audio": audio})


# A video held in memory, or a seekable file object that reads it (keyring.RawReader)
VideoSource = bytes | BinaryIO | io.RawIOBase


def open_video(data: VideoSource) -> av.container.InputContainer:
    """Open a container held in memory or in a seekable file object (read from its start)."""
    source: BinaryIO | io.RawIOBase
    if isinstance(data, bytes):
        source = io.BytesIO(data)
    else:
        source = data
        source.seek(0)
    try:
        return av.open(source, mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise ProbeError(f"not a readable video container: {_reason(exc)}") from exc


def probe_video(data: VideoSource, max_pixels: int) -> tuple[VideoInfo, list[FramePacket]]:
    """Stream facts plus every coded video frame (decode order) for :func:`plan_chunks`."""
    with open_video(data) as container:
        if not container.streams.video:
            raise ProbeError("the file has no video stream")
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if width <= 0 or height <= 0:
            raise ProbeError("the video stream declares no frame size")
        if width * height > max_pixels:
            raise ProbeError(f"frames are {width}x{height} = {width * height} pixels, above the "
                             f"limit of {max_pixels}")
        if stream.time_base is None:
            raise ProbeError("the video stream has no time base")
        packets, end_pts = _frame_packets(container, stream)
        if not packets:
            raise ProbeError("the video stream has no frames")
        rotation = _first_frame_rotation(container, stream)
        time_base = Fraction(stream.time_base)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        start = min(p.pts for p in packets)
        if rate is None or rate <= 0:
            rate = Fraction(len(packets), 1) / max((end_pts - start) * time_base, Fraction(1))
        audio = [AudioInfo(s.index, s.codec_context.name, int(s.codec_context.sample_rate or 0),
                           int(s.codec_context.channels or 0)) for s in container.streams.audio]
        dropped = [f"{s.type}:{s.codec_context.name if s.codec_context else 'none'}"
                   for s in container.streams
                   if s.type not in ("video", "audio") or (s.type == "video" and s is not stream)]
        return VideoInfo(
            container=container.format.name, codec=ctx.name, width=width, height=height,
            rotation=rotation, time_base=str(time_base), average_rate=str(Fraction(rate)),
            frame_count=len(packets), start_pts=start, end_pts=end_pts,
            duration_s=float((end_pts - start) * time_base), audio=audio,
            dropped_streams=dropped, creation_time=container.metadata.get("creation_time"),
        ), packets


def _frame_packets(container: av.container.InputContainer,
                   stream: av.video.stream.VideoStream) -> tuple[list[FramePacket], int]:
    packets: list[FramePacket] = []
    end_pts = 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.is_discard:
                continue  # the flush packet, or frames an edit list hides
            pts = packet.pts if packet.pts is not None else packet.dts
            if pts is None:
                raise ProbeError(f"video frame {len(packets)} has no timestamp")
            packets.append(FramePacket(int(pts), None if packet.dts is None else int(packet.dts),
                                       bool(packet.is_keyframe)))
            end_pts = max(end_pts, int(pts) + int(packet.duration or 0))
    except av.error.FFmpegError as exc:
        raise ProbeError(f"the container is corrupt after {len(packets)} frames: "
                         f"{_reason(exc)}") from exc
    if packets and not any(p.keyframe for p in packets):
        raise ProbeError("the video stream has no keyframe to start decoding from")
    return packets, end_pts


def _first_frame_rotation(container: av.container.InputContainer,
                          stream: av.video.stream.VideoStream) -> int:
    container.seek(0, stream=stream)
    try:
        frame = next(container.decode(stream), None)
    except av.error.FFmpegError as exc:
        raise ProbeError(f"the first video frame does not decode: {_reason(exc)}") from exc
    if frame is None:
        raise ProbeError("no video frame decodes")
    degrees = float(frame.rotation or 0) % 360
    quarter = round(degrees / 90) % 4 * 90
    if abs((degrees - quarter + 180) % 360 - 180) > 1:
        raise ProbeError(f"display rotation of {degrees:.0f} degrees is not a quarter turn")
    return quarter


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip() or exc.__class__.__name__
