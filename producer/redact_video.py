"""``veil redact`` for videos: the cluster's chunk and assemble code, run in this process.

The same plain functions as the Celery tasks (:func:`workers.video.chunk.redact_chunk` and
:func:`workers.video.assemble.assemble`) with the same probe and chunk plan, so a local run
redacts exactly like the cluster; only the queue, S3 and the ledger are left out. Chunks run in
a process pool (each child builds its own detector after the fork), and are shorter than the
policy's when that keeps every process busy: the output does not depend on the chunk length
(frames, timestamps and tracking across boundaries are exact either way).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.settings import get_settings
from infra.video_probe import ProbeError, VideoInfo, probe_video
from producer.chunk_plan import plan_chunks
from schemas.chunks import MIN_CHUNK_S, ChunkPlan
from schemas.policy import Policy
from workers import runtime
from workers.imageio import BadInputError
from workers.video.assemble import AssemblyError, assemble
from workers.video.chunk import ChunkOutput, ChunkWork, redact_chunk


@dataclass
class VideoResult:
    frames: int
    faces: int  # tracked regions redacted
    chunks: int
    boxes: list[list[tuple[float, float, float, float]]]  # per frame, when asked
    guard: list[dict[str, Any]]  # per chunk: what the guard checked and did
    motion_gate: list[dict[str, Any]]  # per chunk: what the motion gate detected


LOCAL_MAX_CHUNK_S = 60.0  # a chunk's encoded output is held in memory until assembly


def local_chunk_seconds(info: VideoInfo, policy: Policy, processes: int) -> float:
    """About two chunks per process (at least ``MIN_CHUNK_S``), up to ``LOCAL_MAX_CHUNK_S``.

    Unlike the pipeline (where the policy's length sets how finely work spreads over nodes and
    what a retry costs), one pool gains nothing from more chunks, and each boundary decodes and
    detects its warm-up frames again: 16 frames are 1.6 s of a 10-fps video, so 10-s chunks
    would detect 19 % more frames than the video has. A policy length under ``MIN_CHUNK_S`` is
    kept as it is.
    """
    if policy.chunk_seconds < MIN_CHUNK_S:
        return policy.chunk_seconds
    share = max(MIN_CHUNK_S, info.duration_s / max(1, 2 * processes))
    return min(share, max(policy.chunk_seconds, LOCAL_MAX_CHUNK_S))


def redact_video_file(path: Path, output: Path, policy: Policy, processes: int,
                      progress: Callable[[int], None] | None = None,
                      keep_boxes: bool = False) -> VideoResult:
    """Redact one video file into ``output`` (MP4); raises BadInputError for bad input.

    The file is read where it lies, never loaded whole: each chunk opens it and decodes its own
    time range, so a long video costs no more memory than a short one.
    """
    settings = get_settings()
    try:
        with path.open("rb") as handle:
            info, packets = probe_video(handle, settings.limits.max_image_pixels)
        plans = plan_chunks(packets, info.tb, local_chunk_seconds(info, policy, processes))
    except (ProbeError, ValueError) as exc:
        raise BadInputError(f"not a video Veil can redact: {exc}") from exc
    jobs = [(str(path), info.to_json(), plan.to_json(), keep_boxes) for plan in plans]
    outputs: list[ChunkOutput] = []
    processes = max(1, min(processes, len(plans)))
    if processes == 1:
        _init_child(policy, settings.models.intra_op_threads)
        for job in jobs:
            outputs.append(_run_chunk(job))
            if progress:
                progress(outputs[-1].frames)
    else:
        context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_init_child,
                                 initargs=(policy, 1)) as pool:
            for result in pool.map(_run_chunk, jobs):
                outputs.append(result)
                if progress:
                    progress(result.frames)
    try:
        with path.open("rb") as original:  # read only for its audio, when kept
            joined = assemble([o.data for o in outputs], info, original,
                              policy.audio == "keep")
    except AssemblyError as exc:
        raise BadInputError(str(exc)) from exc
    from producer.redact_local import write_atomically
    write_atomically(output, joined.data)
    return VideoResult(joined.frames, sum(len(o.tracks) for o in outputs), len(outputs),
                       [box for o in outputs for box in o.boxes],
                       [o.params["guard"] for o in outputs],
                       [o.params["motion_gate"] for o in outputs])


_child: dict[str, Any] = {}


def _init_child(policy: Policy, threads: int) -> None:
    _child.update(detector=runtime.process_detector(threads), policy=policy,
                  threads=threads, video=get_settings().video)


def _run_chunk(job: tuple[str, dict[str, Any], dict[str, Any], bool]) -> ChunkOutput:
    path, info, plan, keep_boxes = job
    with open(path, "rb") as handle:
        return redact_chunk(ChunkWork(handle, VideoInfo.from_json(info), ChunkPlan.from_json(plan),
                                      _child["policy"], _child["detector"], _child["video"],
                                      threads=_child["threads"], keep_boxes=keep_boxes))
