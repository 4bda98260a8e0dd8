"""The media side of an access request: clips, the contact sheet of regions, and reveals.

* **Regions** are the detection rows the workers recorded: one per face (or plate, text) in an
  image, one per tracked region in a video (its frames and the union of its boxes). Their row
  id is the region id an operator names with ``--reveal``.
* **Clip**: a video is cut to the requested time range by decoding and re-encoding the frames in
  range (a stream copy could only cut at keyframes and would show frames outside the range).
  Audio is not carried into a clip.
* **Contact sheet**: one tile per region, cut from the *redacted* output frame with the region
  boxed and numbered. The sheet therefore shows no face at all: the operator points at the
  requester by clothing, place and time, the way the request describes them, and no face
  recognition (or face) is involved.
* **Reveal**: the raw original is decoded again and redacted with every recorded region except
  the revealed ones, through the workers' own functions (``redact_frame``, ``decode_image``,
  ``decode_chunk``). A video region is redacted with the union of its boxes over its frames,
  larger than each frame's box: everyone else is over-covered rather than under. The guard's
  extra solid fills are not re-applied to the revealed copy (the guard would re-find, and cover,
  the very face being revealed); the regions it added as misses are recorded detections and are
  redacted like any other.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import cast

import av
import cv2
import numpy as np
from numpy.typing import NDArray

from infra.ledger_rights import Region
from infra.video_probe import VideoInfo, VideoSource
from schemas.chunks import ChunkPlan
from schemas.policy import Policy
from workers.detectors.base import Detection
from workers.image_pipeline import redact_frame
from workers.imageio import decode_image, encode_image
from workers.video.decode import decode_chunk
from workers.video.encode import ChunkEncoder, EncoderSettings

Frame = NDArray[np.uint8]
TILE = 180  # px, the side of a contact-sheet tile


def _redacted(frame: Frame, index: int, regions: Iterable[Region], policy: Policy) -> Frame:
    return redact_frame(frame, [Detection(r.cls, r.score, r.box) for r in regions
                                if r.covers(index)], policy)


def reveal_image(raw: bytes, hidden: Sequence[Region], policy: Policy,
                 max_pixels: int) -> tuple[bytes, str]:
    """The original image with only ``hidden`` redacted (the revealed regions left out)."""
    image = decode_image(raw, max_pixels)
    return encode_image(_redacted(image.frame, 0, hidden, policy), image.format,
                        policy.jpeg_quality)


def _encoder(width: int, height: int, time_base: Fraction, rate: Fraction,
             policy: Policy) -> ChunkEncoder:
    return ChunkEncoder(EncoderSettings(
        codec="libx264", crf=policy.video_crf, preset="veryfast", width=width + width % 2,
        height=height + height % 2, time_base=str(time_base), rate=str(rate),
        keyint=max(1, round(rate * 2)), threads=0))


def reveal_video(raw: VideoSource, info: VideoInfo, plans: Sequence[ChunkPlan],
                 hidden: Sequence[Region], policy: Policy,
                 window_s: tuple[float, float] | None) -> bytes | None:
    """The original video, frames in ``window_s`` (seconds from its start; all when None),
    with only ``hidden`` redacted. None when no frame falls in the window."""
    width, height = info.display_size
    encoder = _encoder(width, height, info.tb, Fraction(info.average_rate), policy)
    first: int | None = None
    for plan in plans:
        for frame in decode_chunk(raw, info, plan):
            if not frame.in_range or not _inside(frame.pts - info.start_pts, info.tb, window_s):
                continue
            first = frame.pts if first is None else first
            encoder.write(_redacted(frame.image, frame.index, hidden, policy), frame.pts - first,
                          frame.duration)
    data = encoder.finish()
    return data if first is not None else None


def clip_video(data: bytes, window_s: tuple[float, float], policy: Policy) -> bytes | None:
    """A redacted MP4 cut to ``window_s`` (re-encoded: the output stays redacted frame for
    frame). None when no frame falls in the window."""
    first: int | None = None
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        tb = cast(Fraction, stream.time_base)
        start = stream.start_time or 0
        encoder = _encoder(int(stream.codec_context.width), int(stream.codec_context.height), tb,
                           Fraction(stream.average_rate or 25), policy)
        for frame in container.decode(stream):
            pts = int(frame.pts or 0)
            if not _inside(pts - start, tb, window_s):
                continue
            first = pts if first is None else first
            encoder.write(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8), pts - first,
                          int(frame.duration or 0) or 1)
    out = encoder.finish()
    return out if first is not None else None


def _inside(pts: int, tb: Fraction, window_s: tuple[float, float] | None) -> bool:
    if window_s is None:
        return True
    at = float(pts * tb)
    return window_s[0] - 1e-6 <= at <= window_s[1] + 1e-6


def video_frames(data: bytes, wanted: set[int]) -> Iterator[tuple[int, Frame]]:
    """The frames of a (redacted) video at the given indices, in order, decoded once."""
    if not wanted:
        return
    last = max(wanted)
    with av.open(io.BytesIO(data), mode="r") as container:
        for index, frame in enumerate(container.decode(container.streams.video[0])):
            if index in wanted:
                yield index, np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
            if index >= last:
                return


def tile(frame: Frame, region: Region, caption: str) -> Frame:
    """The region boxed and numbered on a crop around it (the box, plus its surroundings, so
    clothing and place show), scaled to a square tile with a caption."""
    height, width = frame.shape[:2]
    x1, y1, x2, y2 = region.box
    side = max(x2 - x1, y2 - y1) * 3.0
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + (y2 - y1)  # a little downwards: the body
    left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    right, bottom = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
    marked = frame.copy()
    thick = max(2, round(max(width, height) / 300))
    cv2.rectangle(marked, (int(x1), int(y1)), (int(x2), int(y2)), (0, 200, 255), thick)
    crop = marked[top:max(bottom, top + 1), left:max(right, left + 1)]
    scale = TILE / max(crop.shape[:2])
    crop = np.asarray(cv2.resize(crop, (max(1, round(crop.shape[1] * scale)),
                             max(1, round(crop.shape[0] * scale))), interpolation=cv2.INTER_AREA),
        np.uint8)
    out = np.full((TILE + 36, TILE, 3), 255, np.uint8)
    out[:crop.shape[0], :crop.shape[1]] = crop
    cv2.putText(out, f"#{region.id} {region.cls}", (4, TILE + 15), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(out, caption, (4, TILE + 31), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (60, 60, 60), 1,
                cv2.LINE_AA)
    return out


def contact_sheet(tiles: Sequence[Frame], columns: int = 6) -> bytes:
    """The tiles in a grid, as PNG bytes (a white sheet saying so when there are none)."""
    if not tiles:
        blank = np.full((60, 360, 3), 255, np.uint8)
        cv2.putText(blank, "no regions recorded in this range", (8, 35),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        return cv2.imencode(".png", blank)[1].tobytes()
    th, tw = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    sheet = np.full((rows * (th + 8) + 8, min(columns, len(tiles)) * (tw + 8) + 8, 3), 230,
                    np.uint8)
    for n, t in enumerate(tiles):
        y, x = 8 + (n // columns) * (th + 8), 8 + (n % columns) * (tw + 8)
        sheet[y:y + th, x:x + tw] = t
    return cv2.imencode(".png", sheet)[1].tobytes()
