"""Frame-exact range decoding: the decode stage of a chunk.

A chunk seeks to the keyframe its plan names, decodes forward and emits exactly the frames whose
timestamps fall in its range, upright (the container's display rotation applied to the pixels,
as images get their EXIF orientation). The last few frames before the range are handed out as
warm-up, so short-term tracking continues across the chunk boundary without redacting them.

Hazards handled here, because every later stage trusts what it gets:

* a seek that lands after the range's first frame (some demuxers seek by decode time, or
  approximately): detected before anything is emitted, and the chunk decodes from the start;
* a corrupt middle: FFmpeg conceals damaged macroblocks and carries on. A frame of the range
  that the decoder marks corrupt (it concealed errors in it) fails the chunk, and so do errors in
  its log (captured on this thread: decoding is single-threaded), a frame count that differs
  from the plan, a frame without a timestamp, or a change of frame size mid-stream. The log
  alone is not enough: with B-frames the decoder reports a damaged frame while it still hands
  out earlier ones, so its errors can land among the pre-roll's. Errors before the range
  (pre-roll after a seek into an open GOP) are tolerated: those frames are never emitted, and
  a corrupt frame there is in the range of the chunk before, which fails on it;
* timestamps out of order: AVI keeps one timestamp per packet in decode order, so with B-frames
  the decoder hands out frames (in display order) carrying each other's timestamps. Frames leave
  the decoder in display order whatever their stamps say, so there each one takes the smallest
  timestamp among those seen and not yet given out (:func:`_presentation_order`). Containers
  that stamp presentation times (MP4, MOV, Matroska, MPEG-TS) are taken as they are, and a
  stamp in the range that does not rise fails the chunk with a reason, not a muxer error.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.logging
import numpy as np
from numpy.typing import NDArray

from infra.video_probe import ProbeError, VideoInfo, VideoSource, open_video
from schemas.chunks import ChunkPlan
from workers.imageio import BadInputError


@dataclass
class DecodedFrame:
    pts: int
    duration: int
    index: int  # position in the whole video, in presentation order (warm-up: before the range)
    image: NDArray[np.uint8]  # upright BGR
    warmup: bool = False  # a frame before the range: for tracking only, never emitted
    lookahead: bool = False  # a frame after the range: for filling mask gaps, never emitted

    @property
    def in_range(self) -> bool:
        return not (self.warmup or self.lookahead)


def decode_chunk(data: VideoSource, info: VideoInfo, plan: ChunkPlan, warmup: int = 0,
                 lookahead: int = 0) -> Iterator[DecodedFrame]:
    """Yield up to ``warmup`` frames before the range, exactly the frames of the range, then up
    to ``lookahead`` frames after it (decoding problems there belong to the next chunk)."""
    av.logging.set_level(av.logging.ERROR)
    seek = plan.seek_ts
    while True:
        frames = _decode(data, info, plan, warmup, lookahead, seek)
        pending: list[DecodedFrame] = []
        for item in frames:
            if item.warmup:
                pending.append(item)
                continue
            if seek is not None and item.pts != plan.first_pts:
                break  # the seek overshot the range's first frame
            yield from pending
            yield item
            yield from frames
            return
        frames.close()
        if seek is None:
            raise BadInputError(f"chunk {plan.index}: no frame decodes in its range")
        seek = None  # decode from the start of the file instead


def _decode(data: VideoSource, info: VideoInfo, plan: ChunkPlan, warmup: int, lookahead: int,
            seek: int | None) -> Generator[DecodedFrame, None, None]:
    tb = info.tb
    nominal = max(1, round(1 / (Fraction(info.average_rate) * tb)))
    emitted, ahead, last_pts = 0, 0, None
    held: deque[tuple[av.VideoFrame, int]] = deque(maxlen=max(0, warmup))
    try:
        opened = open_video(data)
    except ProbeError as exc:
        raise BadInputError(f"chunk {plan.index}: {exc}") from exc
    with opened as container, av.logging.Capture() as logs:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        if seek is not None:
            container.seek(seek, stream=stream, backward=True, any_frame=False)
        try:
            stamps_in_decode_order = container.format.name in DECODE_ORDER_STAMPS
            for frame, pts in _presentation_order(container.decode(stream), stream, plan,
                                                  stamps_in_decode_order):
                if plan.end_pts is not None and pts >= plan.end_pts:
                    if ahead == 0 and emitted:
                        _check_errors(logs, plan, last_pts, tb)  # the range itself is clean
                    if ahead >= lookahead:
                        break
                    yield _convert(frame, pts, info, plan, nominal,
                                   plan.first_frame + emitted + ahead, lookahead=True)
                    ahead += 1
                    continue
                if plan.start_pts is not None and pts < plan.start_pts:
                    if emitted:
                        raise BadInputError(_where(plan, pts, tb, "timestamps go backwards"))
                    if warmup:
                        held.append((frame, pts))
                    continue
                if frame.is_corrupt:
                    raise BadInputError(_where(plan, pts, tb, "the decoder reports a corrupt "
                                               "frame (it concealed damaged data)"))
                if last_pts is not None and pts <= last_pts:
                    raise BadInputError(_where(plan, pts, tb, "two frames share a timestamp or "
                                               "come out of order; the timestamps cannot be "
                                               "trusted"))
                if emitted:
                    _check_errors(logs, plan, pts, tb)
                else:
                    for k, (early, early_pts) in enumerate(held):
                        yield _convert(early, early_pts, info, plan, nominal,
                                       plan.first_frame - len(held) + k, warmup=True)
                    held.clear()
                    del logs[:]  # pre-roll errors concern frames that are never emitted
                yield _convert(frame, pts, info, plan, nominal, plan.first_frame + emitted)
                emitted += 1
                last_pts = pts
        except av.error.FFmpegError as exc:
            if not ahead:
                raise BadInputError(_where(plan, last_pts, tb, f"the video does not decode: "
                                           f"{exc}")) from exc
        if emitted and not ahead:
            _check_errors(logs, plan, last_pts, tb)
    if emitted and (emitted != plan.frame_count or last_pts != plan.last_pts):
        raise BadInputError(
            f"chunk {plan.index}: decoded {emitted} frames (last at "
            f"{_seconds(last_pts, tb)}), the container lists {plan.frame_count} (last at "
            f"{_seconds(plan.last_pts, tb)}); the file is corrupt or truncated")


DECODE_ORDER_STAMPS = frozenset({"avi"})  # demuxers whose packets carry decode-order stamps
REORDER_WINDOW = 16  # frames: no H.264 or HEVC frame is shown further from its decode position


def _presentation_order(frames: Iterable[av.VideoFrame], stream: av.video.stream.VideoStream,
                        plan: ChunkPlan, stamps_in_decode_order: bool
                        ) -> Iterator[tuple[av.VideoFrame, int]]:
    """Each decoded frame with its presentation timestamp. Where packets are stamped in decode
    order and the codec reorders frames (B-frames), that is the smallest of the stamps seen and
    not yet given out, once ``REORDER_WINDOW`` later frames have come (or at the end);
    elsewhere the frame's own, handed out at once."""
    pending: deque[av.VideoFrame] = deque()
    stamps: list[int] = []
    depth = 0
    for frame in frames:
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is None:
            raise BadInputError(f"chunk {plan.index}: a frame has no timestamp")
        heapq.heappush(stamps, int(pts))
        pending.append(frame)
        if stamps_in_decode_order and stream.codec_context.reorder_depth:
            depth = REORDER_WINDOW
        while len(pending) > depth:
            yield pending.popleft(), heapq.heappop(stamps)
    while pending:
        yield pending.popleft(), heapq.heappop(stamps)


def _convert(frame: av.VideoFrame, pts: int, info: VideoInfo, plan: ChunkPlan, nominal: int,
             index: int, warmup: bool = False, lookahead: bool = False) -> DecodedFrame:
    if (frame.width, frame.height) != (info.width, info.height):
        raise BadInputError(f"chunk {plan.index}: the frame size changes mid-stream from "
                            f"{info.width}x{info.height} to {frame.width}x{frame.height}")
    image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
    if info.rotation:
        image = np.ascontiguousarray(np.rot90(image, info.rotation // 90))
    return DecodedFrame(pts=int(pts), duration=int(frame.duration or nominal), index=index,
                        image=image, warmup=warmup, lookahead=lookahead)


def _check_errors(logs: list[tuple[int, str, str]], plan: ChunkPlan, pts: int | None,
                  tb: Fraction) -> None:
    errors = [message.strip() for level, _, message in logs if level <= av.logging.ERROR]
    if errors:
        raise BadInputError(_where(plan, pts, tb, f"the decoder reports a corrupt frame "
                                   f"({errors[0]})"))


def _where(plan: ChunkPlan, pts: int | None, tb: Fraction, what: str) -> str:
    return f"chunk {plan.index}: {what} near {_seconds(pts, tb)}"


def _seconds(pts: int | None, tb: Fraction) -> str:
    return "the start" if pts is None else f"{float(pts * tb):.3f} s"
