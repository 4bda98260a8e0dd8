"""Test videos generated at test time with PyAV, with the hazards real camera files carry.

Every frame shows a real face (scikit-image's astronaut) moving across a textured background
and, in its top-left corner as shown (after rotation), its own index as a 12-bit barcode, so a
test can read which input frame each output frame came from: a frame lost, doubled or swapped
at a chunk boundary is visible in the pixels, not only in the timestamps.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

BITS = 12


@dataclass
class VideoSpec:
    frames: int = 50
    fps: int = 25
    width: int = 320
    height: int = 240
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    container: str = "mp4"
    gop: int = 12
    bframes: int = 2
    time_base: Fraction = Fraction(1, 12800)
    vfr: bool = False  # irregular frame durations
    rotation: int = 0  # display rotation (counter-clockwise degrees) stored in the container
    audio: bool = False
    audio_codec: str = "aac"  # or "pcm_s16le", as AVI and MOV cameras write it
    title: str | None = None
    creation_time: str | None = None
    subtitle: bool = False  # a text subtitle stream (Matroska)
    attachment: bool = False  # an attached file (Matroska)
    data: bool = False  # a KLV data stream (MPEG-TS), like GPS/telemetry tracks
    seed: int = 0
    static: bool = False  # a fixed camera: the background stays, only the face and barcode move
    extra_metadata: dict[str, str] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def _face() -> NDArray[np.uint8]:
    from skimage import data

    rgb = data.astronaut()[20:220, 120:300]  # head and shoulders
    return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def picture(index: int, width: int, height: int, seed: int = 0,
            static: bool = False) -> NDArray[np.uint8]:
    """The frame as displayed (BGR): background (panning unless ``static``), moving face, index
    barcode top-left."""
    frame = np.roll(_background(width, height, seed), 0 if static else index * 3, axis=1)
    x1, y1, x2, y2 = face_box(index, width, height)
    frame[y1:y2, x1:x2] = _sized_face(width, height)[:y2 - y1, :x2 - x1]
    block = barcode_block(width, height)
    for bit in range(BITS):
        value = 255 if (index >> bit) & 1 else 0
        frame[:block, bit * block:(bit + 1) * block] = value
    return frame


@functools.lru_cache(maxsize=4)
def _background(width: int, height: int, seed: int) -> NDArray[np.uint8]:
    ys, xs = np.mgrid[:height, :width]
    base = ((xs * 2 + ys + seed * 7) % 160 + 40).astype(np.uint8)
    return np.dstack([base, np.roll(base, 17, axis=1), np.roll(base, 31, axis=0)])


@functools.lru_cache(maxsize=4)
def _sized_face(width: int, height: int) -> NDArray[np.uint8]:
    face = _face()
    size = _face_height(width, height)
    return np.asarray(cv2.resize(face, (size * face.shape[1] // face.shape[0], size),
                                 interpolation=cv2.INTER_AREA))


def _face_height(width: int, height: int) -> int:
    return max(24, int(min(width, height) * 0.55))


def barcode_block(width: int, height: int) -> int:
    return max(4, min(width // (BITS + 2), height // 8, 12))


def read_index(frame: NDArray[np.uint8]) -> int:
    """The index barcode of a displayed frame (BGR or gray)."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    block = barcode_block(gray.shape[1], gray.shape[0])
    centre = block // 2
    return sum(1 << bit for bit in range(BITS)
               if gray[centre, bit * block + centre] > 127)


def face_box(index: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Where the face is drawn in displayed frame ``index``: x1, y1, x2, y2."""
    face = _face()
    size = _face_height(width, height)
    fw = size * face.shape[1] // face.shape[0]
    span = max(1, width - fw)
    x = span // 2 + int((span // 2) * np.sin(index / 9.0))
    y = max(0, height - size - 2)
    return x, y, min(width, x + fw), min(height, y + size)


def frame_times(spec: VideoSpec) -> list[int]:
    """Presentation timestamps (in ``spec.time_base``) of every frame."""
    step = Fraction(1, spec.fps) / spec.time_base
    if not spec.vfr:
        return [round(i * step) for i in range(spec.frames)]
    rng = np.random.default_rng(spec.seed + 1)
    times, t = [], 0
    for _ in range(spec.frames):
        times.append(t)
        t += max(1, round(step * float(rng.choice([0.5, 1.0, 1.0, 1.5, 3.0]))))
    return times


def make_video(spec: VideoSpec) -> bytes:
    """Encode a video for ``spec`` and return the file's bytes."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format=spec.container)
    for key, value in {**spec.extra_metadata, **_tags(spec)}.items():
        out.metadata[key] = value
    stored_w, stored_h = (spec.height, spec.width) if spec.rotation in (90, 270) \
        else (spec.width, spec.height)
    video = out.add_stream(spec.codec, rate=spec.fps)
    video.width, video.height, video.pix_fmt = stored_w, stored_h, spec.pix_fmt
    video.time_base = spec.time_base
    video.codec_context.time_base = spec.time_base
    video.codec_context.gop_size = spec.gop
    video.codec_context.thread_count = 1  # threaded x264 is not byte-for-byte repeatable
    video.codec_context.max_b_frames = spec.bframes
    if spec.codec == "libx265":
        video.codec_context.options = {"x265-params": "log-level=error"}
    if spec.rotation:
        video.set_display_rotation(spec.rotation)
    audio = out.add_stream(spec.audio_codec, rate=48000, layout="mono") if spec.audio else None
    subtitle = out.add_mux_stream("subrip") if spec.subtitle else None
    data = out.add_data_stream("klv") if spec.data else None
    if spec.attachment:
        out.add_attachment("owner.txt", "text/plain", b"Jane Roe, 1 Secret Street")
    times = frame_times(spec)
    for index, pts in enumerate(times):
        shown = picture(index, spec.width, spec.height, spec.seed, spec.static)
        stored = np.rot90(shown, -spec.rotation // 90) if spec.rotation else shown
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(stored), format="bgr24")
        frame.pts, frame.time_base = pts, spec.time_base
        for packet in video.encode(frame):
            out.mux(packet)
        seconds = Fraction(pts) * spec.time_base
        if subtitle is not None and index % spec.fps == 0:
            _mux_text(out, subtitle, b"Jane Roe walks home", seconds)
        if data is not None and index % spec.fps == 0:
            _mux_text(out, data, b"GPS 52.5200N 13.4050E", seconds)
    for packet in video.encode():
        out.mux(packet)
    if audio is not None:
        _write_audio(out, audio, float(Fraction(times[-1]) * spec.time_base) + 1 / spec.fps)
    out.close()
    return buf.getvalue()


def _tags(spec: VideoSpec) -> dict[str, str]:
    tags = {}
    if spec.title:
        tags["title"] = spec.title
    if spec.creation_time:
        tags["creation_time"] = spec.creation_time
    return tags


def _mux_text(out: av.container.OutputContainer, stream: av.stream.Stream, text: bytes,
              seconds: Fraction) -> None:
    packet = av.Packet(text)
    tb = stream.time_base or Fraction(1, 1000)
    packet.pts = packet.dts = int(seconds / tb)
    packet.duration = int(Fraction(1, 2) / tb)
    packet.time_base = tb
    packet.stream = stream
    out.mux(packet)


def _write_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                 seconds: float) -> None:
    """A 440 Hz tone with a click every second, from time zero (sync is checked on packets)."""
    rate, size = 48000, 1024
    total = int(seconds * rate)
    for start in range(0, total, size):
        t = (np.arange(start, min(total, start + size)) / rate).astype(np.float32)
        wave = 0.2 * np.sin(2 * np.pi * 440 * t)
        wave[(t % 1.0) < 0.01] = 0.9
        if stream.codec_context.name.startswith("pcm_s16") or \
                stream.codec_context.name == "libmp3lame":
            frame = av.AudioFrame.from_ndarray((wave[None, :] * 32767).astype(np.int16),
                                               format="s16", layout="mono")
        else:
            frame = av.AudioFrame.from_ndarray(wave[None, :], format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


@dataclass
class DecodedVideo:
    """What a viewer gets from a file: frames as displayed and their times."""

    times: list[Fraction]  # presentation time of each frame in seconds, in display order
    indices: list[int]  # barcode of each frame
    frames: list[NDArray[np.uint8]]  # displayed BGR frames (kept when asked)
    size: tuple[int, int]  # displayed (width, height)
    duration: Fraction
    rotation: int


def decode_video(data: bytes, keep_frames: bool = False) -> DecodedVideo:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base)
        times, indices, frames = [], [], []
        rotation, size, end = 0, (0, 0), Fraction(0)
        for frame in container.decode(stream):
            rotation = round(float(frame.rotation or 0)) % 360
            image = frame.to_ndarray(format="bgr24")
            if rotation:
                image = np.ascontiguousarray(np.rot90(image, rotation // 90))
            size = (image.shape[1], image.shape[0])
            assert frame.pts is not None
            times.append(Fraction(frame.pts) * tb)
            end = max(end, (Fraction(frame.pts) + Fraction(frame.duration or 0)) * tb)
            indices.append(read_index(image))
            if keep_frames:
                frames.append(image)
        # A player shows the frames in the order the decoder hands them out, at the stream's
        # timestamps in rising order: AVI's per-packet timestamps come out of the decoder in
        # decode order when there are B-frames, so the k-th frame's time is the k-th smallest.
        times.sort()
        return DecodedVideo(times, indices, frames, size, end - (times[0] if times else 0),
                            rotation)


def frame_packets(data: bytes, fps: int) -> dict[int, bytes]:
    """The encoded bytes of each frame of a constant-rate video, by frame index."""
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        return {round(packet.pts * stream.time_base * fps): bytes(packet)
                for packet in container.demux(stream) if packet.size}


def write(path: Path, spec: VideoSpec) -> Path:
    path.write_bytes(make_video(spec))
    return path


def face_core(index: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The face itself (eyes, nose, mouth) inside :func:`face_box` in displayed frame ``index``."""
    x1, y1, x2, y2 = face_box(index, width, height)
    w, h = x2 - x1, y2 - y1
    return x1 + int(0.4 * w), y1 + int(0.28 * h), x1 + int(0.8 * w), y1 + int(0.74 * h)


def face_destroyed(original: NDArray[np.uint8], output: NDArray[np.uint8],
                   box: tuple[int, int, int, int]) -> bool:
    """The face's content changed beyond recognition (grayscale SSIM below 0.6)."""
    from skimage.metrics import structural_similarity

    x1, y1, x2, y2 = box
    a = cv2.cvtColor(original[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    b = cv2.cvtColor(output[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    return bool(structural_similarity(a, b, win_size=7) < 0.6)
