"""Video throughput side by side: `veil redact` in-process, the full pipeline with one and with
two worker processes, and the deface CLI with its defaults, on the same files in one run; plus
per-frame face coverage against a reference and Veil's mask flicker (bench/video_quality.py).

    python -m bench.throughput_video VIDEO... --deface PATH/TO/deface [--detect-long-side 0 640]
        [--full-detect-every 1] [--coverage-step 3]

The pipeline part runs against the local stack (`veil stack up` first) with a database, Redis
db and queue prefix of its own, and deletes every object it wrote. Frames per second are input
frames over wall time, from the first byte read to the finished output (pipeline: from the
start of ingest to the assembly's commit; worker start-up excluded). Veil runs with a
face-only copy of the default policy, as deface redacts faces only.
"""

from __future__ import annotations

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import redis  # noqa: E402

import bench.throughput_pipeline  # noqa: F401  (first: points settings at the bench database)
from bench.throughput_pipeline import _cleanup, _fresh_database  # noqa: E402
from bench.throughput_redact import run_measured  # noqa: E402
from bench.video_quality import coverage, flicker, frames_of, reference_faces  # noqa: E402
from infra.broker import make_celery  # noqa: E402
from infra.db import apply_migrations  # noqa: E402
from infra.policies import get_policy  # noqa: E402
from infra.settings import get_settings  # noqa: E402
from infra.video_probe import probe_video  # noqa: E402
from producer.export import export  # noqa: E402
from producer.ingest import IngestOptions, collect_inputs, ingest, wait_for  # noqa: E402
from producer.redact_video import redact_video_file  # noqa: E402
from schemas.policy import Policy  # noqa: E402

VEIL = str(Path(sys.executable).parent / "veil")


def face_policy(detect_long_side: int | None = None,
                full_detect_every: int | None = None) -> Policy:
    update: dict[str, Any] = {"classes": ["face"]}
    if detect_long_side is not None:
        update["video_detect_long_side"] = detect_long_side
    if full_detect_every is not None:
        update["video_full_detect_every"] = full_detect_every
    return get_policy(None).model_copy(update=update)


def run_inprocess(video: Path, out: Path, detect_long_side: int | None,
                  full_detect_every: int | None = None) -> dict[str, Any]:
    processes = os.cpu_count() or 1
    policy = face_policy(detect_long_side, full_detect_every)
    started = time.perf_counter()
    result = redact_video_file(video, out, policy, processes, keep_boxes=True)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "fps": round(result.frames / seconds, 2),
            "frames": result.frames, "chunks": result.chunks, "processes": processes,
            "detect_long_side": policy.video_detect_long_side,
            "full_detect_every": policy.video_full_detect_every,
            "flicker_frames": flicker(result.boxes),
            "motion_gate": _gate_totals(result.motion_gate),
            "boxes_per_frame": round(sum(map(len, result.boxes)) / max(result.frames, 1), 1)}


def _gate_totals(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The motion gate's frame counts over all chunks, and the share of pixels it detected."""
    if not chunks or chunks[0].get("action") == "off":
        return chunks[0] if chunks else {}
    totals = {key: sum(c[key] for c in chunks) for key in ("full", "cropped", "unchanged")}
    frames = sum(totals.values())
    share = sum(c["detected_share"] * (c["full"] + c["cropped"] + c["unchanged"])
                for c in chunks) / max(1, frames)
    return {**totals, "detected_share": round(share, 3)}


def run_pipeline(video: Path, concurrency: int, out: Path) -> dict[str, Any]:
    settings = get_settings()
    _fresh_database(settings.db.url)
    apply_migrations(settings)
    redis.Redis.from_url(settings.broker.url).flushdb()
    app = make_celery(settings)
    log = open(out.parent / f"worker-{concurrency}.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen([VEIL, "worker", "--concurrency", str(concurrency), "--loglevel",
                               "WARNING", "--without-gossip", "--without-mingle"],
                              stdout=log, stderr=log, start_new_session=True)
    try:
        time.sleep(5.0)  # worker start-up is not part of the measured path
        started = time.perf_counter()
        results = ingest(collect_inputs([str(video)], settings),
                         IngestOptions(policy=face_policy()), settings, app)
        ids = [r.source_id for r in results if r.source_id]
        states = wait_for(ids, settings, timeout_s=3600)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=120)
    out.mkdir(parents=True, exist_ok=True)
    exported = [e.path for e in export(ids, out, settings) if e.path]  # type: ignore[arg-type]
    info, _ = probe_video(video.read_bytes(), settings.limits.max_image_pixels)
    state = next(iter(states.values()))
    _cleanup(settings.db.url)
    return {"seconds": round(seconds, 2), "fps": round(info.frame_count / seconds, 2),
            "state": state[0], "error": state[1], "concurrency": concurrency,
            "output": str(exported[0]) if exported else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", type=Path, nargs="+")
    parser.add_argument("--deface", default="", help="deface CLI of a separate venv")
    parser.add_argument("--detect-long-side", type=int, nargs="*", default=[],
                        help="extra in-process runs at these detection sizes (0 = native)")
    parser.add_argument("--full-detect-every", type=int, nargs="*", default=[],
                        help="extra in-process runs with this motion gate period (1 = off)")
    parser.add_argument("--coverage-step", type=int, default=3,
                        help="judge coverage on every N-th frame")
    parser.add_argument("--reference-threshold", type=float, nargs="+", default=[0.3, 0.5],
                        help="score thresholds of the reference faces (one coverage each)")
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="veil-video-bench-"))
    report: dict[str, Any] = {"cpus": os.cpu_count(), "videos": {}}
    try:
        for video in args.videos:
            report["videos"][video.name] = row = _bench_one(video, args, work / video.stem)
            print(json.dumps({video.name: row}, indent=1), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))


def _bench_one(video: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    row: dict[str, Any] = {}
    outputs: dict[str, Path] = {}
    runs = [None, *(size for size in args.detect_long_side)]
    for size in runs:
        name = "veil_redact" if size is None else f"veil_redact_detect{size}"
        outputs[name] = work / f"{name}.mp4"
        row[name] = run_inprocess(video, outputs[name], size)
    for every in args.full_detect_every:
        name = f"veil_redact_every{every}"
        outputs[name] = work / f"{name}.mp4"
        row[name] = run_inprocess(video, outputs[name], None, every)
    if not args.skip_pipeline:
        for concurrency in (1, 2):
            name = f"veil_pipeline_{concurrency}_process"
            row[name] = run_pipeline(video, concurrency, work / name)
            if row[name]["output"]:
                outputs[name] = Path(row[name]["output"])
    if args.deface:
        outputs["deface"] = work / "deface.mp4"
        measured = run_measured([args.deface, str(video), "-o", str(outputs["deface"])])
        frames = row["veil_redact"]["frames"]
        row["deface"] = {"seconds": measured["seconds"],
                         "fps": round(frames / float(measured["seconds"]), 2)}
        for name in [n for n in row if n.startswith("veil_redact")]:
            row[f"speedup_{name[5:]}_vs_deface"] = round(row[name]["fps"] / row["deface"]["fps"],
                                                        2)
        for concurrency in (1, 2):
            name = f"veil_pipeline_{concurrency}_process"
            if name in row:
                row[f"speedup_pipeline_{concurrency}_vs_deface"] = round(
                    row[name]["fps"] / row["deface"]["fps"], 2)
    originals = frames_of(video, args.coverage_step)
    for threshold in args.reference_threshold:
        faces = reference_faces(originals, threshold)
        row[f"coverage_reference_{threshold}"] = {
            name: coverage(originals, path, faces, args.coverage_step)
            for name, path in outputs.items() if path.exists()}
    return row


if __name__ == "__main__":
    main()
