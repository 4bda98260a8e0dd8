"""Encode redacted frames of one chunk into an MP4 in `work`: the encode stage.

Every chunk of a video is encoded with identical settings (:class:`EncoderSettings` is derived
from the source's probe, its policy and the node's settings only), so the chunks share one
H.264 parameter set and assembly can join them by stream copy. Choices, each for that join:

* no B-frames: decode order equals presentation order, so every chunk's first decode timestamp
  is its first frame's and the joined stream's timestamps rise monotonically across boundaries;
* the source's own time base and each frame's original timestamp and duration are kept, so
  variable frame rate and odd timestamps survive into the output unchanged;
* yuv420p needs even dimensions: an odd width or height is padded by repeating the last
  column or row (nothing is cropped, so no redaction is lost at the edge);
* NVENC (``h264_nvenc``) when a GPU node is configured for it; a mixed cluster must use one
  encoder for all chunks of a video, which assembly checks.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, cast

import av
import cv2
import numpy as np
from av.video.frame import PictureType
from numpy.typing import NDArray

from infra.settings import VideoSettings
from infra.video_probe import VideoInfo
from schemas.policy import Policy

CHUNK_FORMAT = "mp4"


@dataclass(frozen=True)
class EncoderSettings:
    codec: str
    crf: int
    preset: str
    width: int  # even, after rotation and padding
    height: int
    time_base: str
    rate: str
    keyint: int
    threads: int

    def options(self) -> dict[str, str]:
        if self.codec == "h264_nvenc":
            return {"preset": "p4", "rc": "vbr", "cq": str(self.crf), "bf": "0",
                    "g": str(self.keyint), "forced-idr": "1"}
        params = f"bframes=0:keyint={self.keyint}:min-keyint={max(1, self.keyint // 10)}" \
                 ":log-level=error"
        return {"crf": str(self.crf), "preset": self.preset, "x264-params": params,
                "threads": str(self.threads), "forced-idr": "1"}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def encoder_settings(info: VideoInfo, policy: Policy, video: VideoSettings,
                     threads: int = 0) -> EncoderSettings:
    width, height = info.display_size
    rate = Fraction(info.average_rate)
    return EncoderSettings(
        codec=resolve_encoder(video.encoder), crf=policy.video_crf, preset=video.preset,
        width=width + width % 2, height=height + height % 2, time_base=info.time_base,
        rate=info.average_rate, keyint=max(1, round(rate * video.keyframe_seconds)),
        threads=max(0, threads),
    )


def resolve_encoder(choice: str) -> str:
    """``auto``: NVENC when this node's FFmpeg can open it (a GPU and its driver), else x264."""
    if choice != "auto":
        return choice
    try:
        ctx = av.codec.CodecContext.create("h264_nvenc", "w")
        ctx.width, ctx.height, ctx.pix_fmt = 256, 256, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
    except Exception:  # noqa: BLE001 - no GPU, no driver or no NVENC build: use x264
        return "libx264"
    return "h264_nvenc"


def pad_even(image: NDArray[np.uint8]) -> NDArray[np.uint8]:
    height, width = image.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return image
    return np.asarray(cv2.copyMakeBorder(image, 0, height % 2, 0, width % 2,
                                         cv2.BORDER_REPLICATE))


class ChunkEncoder:
    """Collects frames into an in-memory MP4; :meth:`finish` returns its bytes."""

    def __init__(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self._buffer = io.BytesIO()
        self._container = av.open(self._buffer, "w", format=CHUNK_FORMAT,
                                  options={"fflags": "+bitexact"})
        time_base = Fraction(settings.time_base)
        stream = cast(av.video.stream.VideoStream,
                      self._container.add_stream(settings.codec, rate=Fraction(settings.rate)))
        stream.width, stream.height, stream.pix_fmt = settings.width, settings.height, "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.codec_context.max_b_frames = 0
        stream.codec_context.gop_size = settings.keyint
        stream.codec_context.options = settings.options()
        self._stream = stream
        self.frames = 0

    def encodes(self, pts: int) -> bool:
        """Every frame is encoded (a spliced re-run keeps some: ``workers.video.splice``)."""
        return True

    def write(self, image: NDArray[np.uint8], pts: int, duration: int,
              key: bool = False) -> None:
        """Encode one frame; ``key`` makes it a keyframe (IDR), which a decoder can read alone:
        the guard decodes only those of the frames it samples (``frame_guard``)."""
        # OpenCV's BGR -> I420 (BT.601, limited range, like swscale's default) takes about a
        # tenth of the time swscale needs for the same conversion inside the encoder.
        yuv = np.asarray(cv2.cvtColor(pad_even(image), cv2.COLOR_BGR2YUV_I420), np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.duration = pts, duration
        frame.time_base = self._stream.codec_context.time_base
        if key:
            frame.pict_type = PictureType.I
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def finish(self) -> bytes:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return self._buffer.getvalue()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # noqa: BLE001 - discarding a failed chunk; the original error matters
            pass
