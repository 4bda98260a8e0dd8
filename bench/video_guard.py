"""The guard on video: what it costs and whether the published file holds a face it would find.

    python -m bench.video_guard VIDEO... [--every 2 0]

For each video, `veil redact`'s chunks run one after the other in this process (onnxruntime
and OpenCV on one thread, as in a pool child), once with the guard off and once for each
``--every`` (seconds between checked frames; 0 = every frame), with the default policy reduced
to faces (as in throughput_video.py). Printed per run: CPU milliseconds per frame, the guard's
checks, chunks it made run again with every frame checked, runs in all, frames it filled and
faces it added. Then every frame of each output as published is scanned by the same detector
at the detection size: the highest face score in any frame and the frames with a face at or
above the guard's threshold (with sampling, frames the guard did not check may hold one).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import numpy as np

from bench.throughput_video import face_policy
from infra.settings import reset_settings_cache
from infra.video_probe import probe_video
from producer.redact_video import redact_video_file
from workers import runtime
from workers.detectors.base import Detector
from workers.video.chunk import detect_scaled


def run(video: Path, every: float | None, out_dir: Path) -> tuple[dict[str, Any], Path]:
    policy = face_policy()
    guard = policy.guard.model_copy(update={"enabled": every is not None,
                                            "video_every_s": every or 0.0})
    policy = policy.model_copy(update={"guard": guard})
    output = out_dir / f"{video.stem}-{'off' if every is None else every}.mp4"
    started = time.process_time()
    result = redact_video_file(video, output, policy, processes=1)
    cpu = time.process_time() - started
    chunks = [g for g in result.guard if g.get("action") != "skipped"]
    return {"guard_every_s": every, "frames": result.frames, "chunks": result.chunks,
            "cpu_ms_per_frame": round(cpu * 1000 / result.frames, 2),
            "guard_checks": sum(g["checks"] for g in chunks),
            "guard_seconds": round(sum(g["seconds"] for g in chunks), 2),
            "escalated_chunks": sum(g["escalated"] is not None for g in chunks),
            "runs": sum(g["runs"] for g in chunks),
            "filled_frames": sum(g["filled_frames"] for g in chunks),
            "added_faces": sum(g["added_faces"] for g in chunks)}, output


def scan(output: Path, detector: Detector, threshold: float) -> dict[str, Any]:
    """The detector over every frame of the published file, at the detection size."""
    policy = face_policy()
    best, over = 0.0, 0
    batch: list[np.ndarray] = []

    def flush() -> None:
        nonlocal best, over
        for faces in detect_scaled(batch, policy, detector) if batch else []:
            scores = [d.score for d in faces if d.cls == "face"]
            best = max([best, *scores])
            over += any(s >= threshold for s in scores)
        batch.clear()

    with av.open(str(output)) as container:
        for frame in container.decode(video=0):  # 8 at a time, never the whole file
            batch.append(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8))
            if len(batch) == 8:
                flush()
    flush()
    return {"published_best_face_score": round(best, 4), "published_frames_over": over}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--every", nargs="*", type=float, default=[2.0, 0.0],
                        help="seconds between checked frames (0 = every frame)")
    args = parser.parse_args()
    os.environ["VEIL_MODELS__INTRA_OP_THREADS"] = "1"  # one thread, as in a pool child
    reset_settings_cache()
    detector = runtime.process_detector(1)
    threshold = face_policy().guard.threshold
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="veil-guard-bench-") as tmp:
        for video in args.videos:
            with video.open("rb") as handle:
                info, _ = probe_video(handle, 10**9)
            runs = []
            for every in [None, *args.every]:
                figures, output = run(video, every, Path(tmp))
                figures.update(scan(output, detector, threshold))
                output.unlink()
                runs.append(figures)
            report[video.name] = {"size": info.display_size, "rate": info.average_rate,
                                  "threshold": threshold, "runs": runs}
            print(json.dumps({video.name: report[video.name]}, indent=1), flush=True)


if __name__ == "__main__":
    main()
