"""The chunk plan contract for videos: the time ranges a video's chunk jobs cover, no logic.

A chunk is a half-open range of presentation timestamps ``[start_pts, end_pts)`` in the video
stream's time base; the first chunk is open at the start and the last at the end, so every frame
of the input falls in exactly one chunk. The producer makes the plan (``producer.chunk_plan``);
the chunk and assemble workers read it from the job message. The constants below are part of
the contract: the seek point depends on ``WARMUP_FRAMES``, and the planner's lengths on the rest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Frames before a chunk that its task decodes and tracks but never emits (the tracker hand-over
# across chunk boundaries, workers/video/chunk.py). Part of the plan: the seek point depends on it.
WARMUP_FRAMES = 16


@dataclass(frozen=True)
class FramePacket:
    """One coded frame as the demuxer gives it, in decode order."""

    pts: int
    dts: int | None
    keyframe: bool


@dataclass(frozen=True)
class ChunkPlan:
    """What one chunk job decodes and emits (timestamps in the video stream's time base).

    ``seek_ts`` is the decode timestamp of the keyframe from which every frame of the chunk can
    be decoded (None: decode from the start of the file). ``first_frame`` is the index, in
    presentation order over the whole video, of the chunk's first frame.
    """

    index: int
    start_pts: int | None
    end_pts: int | None
    seek_ts: int | None
    first_frame: int
    frame_count: int
    first_pts: int
    last_pts: int

    def contains(self, pts: int) -> bool:
        return (self.start_pts is None or pts >= self.start_pts) and (
            self.end_pts is None or pts < self.end_pts)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChunkPlan:
        return cls(**data)


MIN_CHUNK_S = 4.0  # shortest chunk a short video is split into (warm-up is 16 frames each)
MIN_CHUNKS = 4  # a short video is split into about this many chunks
# A chunk of the policy's length holds at least this many frames: each chunk also decodes and
# detects WARMUP_FRAMES + 3 frames around its range, 19 % extra for 10-s chunks of a 10-fps
# camera, under 10 % from 200 frames on.
MIN_CHUNK_FRAMES = 200
