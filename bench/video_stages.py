"""Where a video frame's CPU time goes: each stage of ``redact_chunk``, per output frame.

    python -m bench.video_stages VIDEO [--processes-planned 2]

Runs every chunk of the file (planned as ``veil redact`` plans them for that many processes)
one after the other in this process, with onnxruntime and OpenCV on one thread each, as in a
pool child, and prints CPU milliseconds per output frame: detection (scaling, onnxruntime,
decoding its output; warm-up and look-ahead frames included, as they are part of a chunk's
cost), tracking, gap filling, redaction, encoding and decoding. CPU time, not wall time, so
the figures hold on a noisy machine. Veil runs the default policy reduced to faces, as in
throughput_video.py.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import workers.video.chunk as chunk
from bench.throughput_video import face_policy
from infra.settings import get_settings
from infra.video_probe import probe_video
from producer.chunk_plan import plan_chunks
from producer.redact_video import local_chunk_seconds
from workers import runtime
from workers.video import encode, track

_spent: defaultdict[str, float] = defaultdict(float)


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            _spent[name] += time.process_time() - started
    return wrapper


def _timed_iter(name: str, function: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        frames = function(*args, **kwargs)
        while True:
            started = time.process_time()
            item = next(frames, None)
            _spent[name] += time.process_time() - started
            if item is None:
                return
            yield item
    return wrapper


def measure(video: Path, processes: int) -> dict[str, Any]:
    settings = get_settings()
    policy = face_policy()
    data = video.read_bytes()
    info, packets = probe_video(data, settings.limits.max_image_pixels)
    plans = plan_chunks(packets, info.tb, local_chunk_seconds(info, policy, processes))
    detector = runtime.process_detector(1)  # one thread for onnxruntime and OpenCV
    detector.detect_batch([np.zeros((64, 64, 3), np.uint8)])  # loads the model: not counted
    patched = [(chunk._GatedDetection, "__call__", "detect", _timed),  # the motion gate included
               (chunk, "redact_frame", "redact", _timed),
               (chunk._Stage, "_fill", "fill", _timed), (track.Tracker, "update", "track", _timed),
               (encode.ChunkEncoder, "write", "encode", _timed),
               (encode.ChunkEncoder, "finish", "encode", _timed),
               (chunk, "decode_chunk", "decode", _timed_iter)]
    originals = [getattr(owner, attr) for owner, attr, _, _ in patched]
    for owner, attr, name, wrap in patched:
        setattr(owner, attr, wrap(name, getattr(owner, attr)))
    try:
        started, frames = time.process_time(), 0
        for plan in plans:
            frames += chunk.redact_chunk(chunk.ChunkWork(data, info, plan, policy, detector,
                                                         settings.video, threads=1)).frames
        total = time.process_time() - started
    finally:
        for (owner, attr, _, _), original in zip(patched, originals, strict=True):
            setattr(owner, attr, original)
    per_frame = {name: round(seconds / frames * 1000, 2) for name, seconds in _spent.items()}
    per_frame["other"] = round((total - sum(_spent.values())) / frames * 1000, 2)
    return {"video": video.name, "frames": frames, "chunks": len(plans),
            "cpu_ms_per_frame": round(total / frames * 1000, 2),
            "stages_ms_per_frame": dict(sorted(per_frame.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--processes-planned", type=int, default=2,
                        help="plan the chunks as veil redact does for this many processes")
    args = parser.parse_args()
    print(json.dumps(measure(args.video, args.processes_planned), indent=1))


if __name__ == "__main__":
    main()
