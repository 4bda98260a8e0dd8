"""Chunk planning for videos: time ranges that split a video's frames exactly. Pure logic.

The producer plans at ingest (``producer.video_plan``) and `veil redact` plans locally; the
plan itself (:class:`schemas.chunks.ChunkPlan`) is the contract the workers read.

A chunk is a half-open range of presentation timestamps ``[start_pts, end_pts)`` in the video
stream's time base; the first chunk is open at the start and the last at the end, so every frame
of the input falls in exactly one chunk whatever its timestamp (variable frame rate, a frame
exactly on a boundary, a stray early or late timestamp). Chunks that would hold no frame (a gap
longer than a chunk) are merged away, so every job has work to do.

The plan is made from the demuxed packets (cheap: no decoding), which also tells each chunk
which keyframe to seek to and how many frames it must emit; the chunk task checks that count,
so a frame lost or doubled at a boundary, or a corrupt middle, fails the job instead of
shipping a wrong video. The keyframe lies at least ``WARMUP_FRAMES`` frames before the chunk's
first frame (where the video has them): the chunk task detects and tracks those frames without
emitting them, exactly as the previous chunk did, so masks continue across the boundary.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from fractions import Fraction

from schemas.chunks import (
    MIN_CHUNK_FRAMES,
    MIN_CHUNK_S,
    MIN_CHUNKS,
    WARMUP_FRAMES,
    ChunkPlan,
    FramePacket,
)


def chunk_seconds_for(duration_s: float, chunk_seconds: float, parts: int = MIN_CHUNKS,
                      frame_rate: float = 0.0) -> float:
    """The policy's chunk length, shortened for a short video so that it makes about ``parts``
    chunks of at least ``MIN_CHUNK_S``: a 30-second clip is shared by a node's processes
    instead of leaving one idle while another works through a long last chunk. Long videos
    keep the policy's length, stretched at a low ``frame_rate`` (frames per second; 0: not
    known) to ``MIN_CHUNK_FRAMES`` frames; a policy length under ``MIN_CHUNK_S`` is kept as it
    is."""
    if chunk_seconds >= MIN_CHUNK_S and frame_rate > 0:
        chunk_seconds = max(chunk_seconds, MIN_CHUNK_FRAMES / frame_rate)
    return min(chunk_seconds, max(MIN_CHUNK_S, duration_s / max(1, parts)))


def chunk_ticks(chunk_seconds: float, time_base: Fraction) -> int:
    """A chunk's length in time-base ticks (at least one tick)."""
    if not math.isfinite(chunk_seconds) or chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds!r}")
    return max(1, round(Fraction(chunk_seconds) / time_base))


def plan_chunks(packets: Sequence[FramePacket], time_base: Fraction,
                chunk_seconds: float, warmup_frames: int = WARMUP_FRAMES) -> list[ChunkPlan]:
    """Split the frames into chunks of ``chunk_seconds`` measured from the first frame; each
    chunk's seek point also decodes the ``warmup_frames`` frames before it.

    Raises ValueError for a video without frames or without a keyframe to start from.
    """
    if not packets:
        raise ValueError("the video has no frames")
    ticks = chunk_ticks(chunk_seconds, time_base)
    order = sorted(range(len(packets)), key=lambda i: packets[i].pts)
    ordered = [packets[i].pts for i in order]
    # earliest decode position of any frame shown at or after each presentation position
    first_decoded = order[:]
    for j in range(len(order) - 2, -1, -1):
        first_decoded[j] = min(first_decoded[j], first_decoded[j + 1])
    origin = ordered[0]
    # Boundaries fall on the grid origin + k * ticks; keep only those with frames on both sides.
    boundaries: list[int] = []
    k = 1
    while True:
        boundary = origin + k * ticks
        if boundary > ordered[-1]:
            break
        below = bisect.bisect_left(ordered, boundary)  # frames before the boundary
        if below > 0 and (not boundaries or ordered[below - 1] >= boundaries[-1]):
            boundaries.append(boundary)
        nxt = ordered[below]  # jump over empty grid cells in one step
        k = max(k + 1, (nxt - origin) // ticks + 1)
    edges: list[int | None] = [None, *boundaries, None]
    plans: list[ChunkPlan] = []
    for index in range(len(edges) - 1):
        start, end = edges[index], edges[index + 1]
        lo = 0 if start is None else bisect.bisect_left(ordered, start)
        hi = len(ordered) if end is None else bisect.bisect_left(ordered, end)
        early = max(0, lo - warmup_frames)
        plans.append(ChunkPlan(index=index, start_pts=start, end_pts=end,
                               seek_ts=_seek_ts(packets, first_decoded[early], ordered[early])
                               if index else None,
                               first_frame=lo, frame_count=hi - lo,
                               first_pts=ordered[lo], last_pts=ordered[hi - 1]))
    return plans


def _seek_ts(packets: Sequence[FramePacket], needed: int, first_pts: int) -> int | None:
    """Decode timestamp of the last keyframe at or before decode position ``needed`` (the first
    frame decoded among those shown at or after ``first_pts``) that is shown no later than it.

    The second condition matters for open GOPs: frames decoded after a keyframe but shown before
    it may reference the previous GOP, so a keyframe shown after ``first_pts`` is not enough.
    """
    for i in range(needed, -1, -1):
        packet = packets[i]
        if packet.keyframe and packet.pts <= first_pts:
            return packet.pts if packet.dts is None else min(packet.dts, packet.pts)
    return None
