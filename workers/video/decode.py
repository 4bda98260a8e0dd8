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
    try:
        opened = open_video(data)
    except ProbeError as exc:
        raise BadInputError(f"chunk {plan.index}: {exc}") from exc
    with opened as container, av.logging.Capture() as logs:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        if seek is not None:
            container.seek(seek, stream=stream, backward=True, any_frame=False)
        walk = _RangeWalk(info, plan, warmup, lookahead, logs)
        try:
            stamps_in_decode_order = container.format.name in DECODE_ORDER_STAMPS
            for frame, pts in _presentation_order(container.decode(stream), stream, plan,
                                                  stamps_in_decode_order):
                if walk.done_after(pts):
                    break
                yield from walk.take(frame, pts)
        except av.error.FFmpegError as exc:
            if not walk.ahead:
                raise BadInputError(_where(plan, walk.last_pts, info.tb, f"the video does not "
                                           f"decode: {exc}")) from exc
        if walk.emitted and not walk.ahead:
            _check_errors(logs, plan, walk.last_pts, info.tb)
    walk.check_count()


class _RangeWalk:
    """Sorts decoded frames into warm-up, range and look-ahead, and checks each as it comes.

    Frames before the range are held (the last ``warmup`` of them) and handed out just before
    the range's first frame; the log of decoder errors is cleared there, since pre-roll errors
    concern frames that are never emitted.
    """

    def __init__(self, info: VideoInfo, plan: ChunkPlan, warmup: int, lookahead: int,
                 logs: list[tuple[int, str, str]]) -> None:
        self.info, self.plan, self.logs = info, plan, logs
        self.warmup, self.lookahead = warmup, lookahead
        self.nominal = max(1, round(1 / (Fraction(info.average_rate) * info.tb)))
        self.emitted = self.ahead = 0
        self.last_pts: int | None = None
        self.held: deque[tuple[av.VideoFrame, int]] = deque(maxlen=max(0, warmup))

    def done_after(self, pts: int) -> bool:
        """Past the range with every look-ahead frame given out (the range checked clean)."""
        end = self.plan.end_pts
        if end is None or pts < end:
            return False
        if self.ahead == 0 and self.emitted:
            _check_errors(self.logs, self.plan, self.last_pts, self.info.tb)
        return self.ahead >= self.lookahead

    def take(self, frame: av.VideoFrame, pts: int) -> Iterator[DecodedFrame]:
        plan = self.plan
        if plan.end_pts is not None and pts >= plan.end_pts:
            yield self._convert(frame, pts, plan.first_frame + self.emitted + self.ahead,
                                lookahead=True)
            self.ahead += 1
        elif plan.start_pts is not None and pts < plan.start_pts:
            if self.emitted:
                raise BadInputError(self._where(pts, "timestamps go backwards"))
            if self.warmup:
                self.held.append((frame, pts))
        else:
            yield from self._in_range(frame, pts)

    def _in_range(self, frame: av.VideoFrame, pts: int) -> Iterator[DecodedFrame]:
        if frame.is_corrupt:
            raise BadInputError(self._where(pts, "the decoder reports a corrupt frame (it "
                                            "concealed damaged data)"))
        if self.last_pts is not None and pts <= self.last_pts:
            raise BadInputError(self._where(pts, "two frames share a timestamp or come out of "
                                            "order; the timestamps cannot be trusted"))
        if self.emitted:
            _check_errors(self.logs, self.plan, pts, self.info.tb)
        else:
            first = self.plan.first_frame - len(self.held)
            for k, (early, early_pts) in enumerate(self.held):
                yield self._convert(early, early_pts, first + k, warmup=True)
            self.held.clear()
            del self.logs[:]  # pre-roll errors concern frames that are never emitted
        yield self._convert(frame, pts, self.plan.first_frame + self.emitted)
        self.emitted += 1
        self.last_pts = pts

    def check_count(self) -> None:
        plan, tb = self.plan, self.info.tb
        if self.emitted and (self.emitted != plan.frame_count or self.last_pts != plan.last_pts):
            raise BadInputError(
                f"chunk {plan.index}: decoded {self.emitted} frames (last at "
                f"{_seconds(self.last_pts, tb)}), the container lists {plan.frame_count} (last "
                f"at {_seconds(plan.last_pts, tb)}); the file is corrupt or truncated")

    def _where(self, pts: int | None, what: str) -> str:
        return _where(self.plan, pts, self.info.tb, what)

    def _convert(self, frame: av.VideoFrame, pts: int, index: int, warmup: bool = False,
                 lookahead: bool = False) -> DecodedFrame:
        info = self.info
        if (frame.width, frame.height) != (info.width, info.height):
            raise BadInputError(f"chunk {self.plan.index}: the frame size changes mid-stream "
                                f"from {info.width}x{info.height} to "
                                f"{frame.width}x{frame.height}")
        image = np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
        if info.rotation:
            image = np.ascontiguousarray(np.rot90(image, info.rotation // 90))
        return DecodedFrame(pts=int(pts), duration=int(frame.duration or self.nominal),
                            index=index, image=image, warmup=warmup, lookahead=lookahead)


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
