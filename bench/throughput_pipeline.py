"""Full-pipeline throughput: ingest -> Redis -> Celery worker -> S3 `redacted` -> ledger, timed
from the first ingest to the last job done, side by side with the deface CLI on the same images,
plus redaction coverage of the pipeline's exported outputs (and deface's) when a ground truth is
given.

Runs against the local stack (`veil stack up` first) with a database, Redis db and queue prefix
of its own; every object it writes is deleted at the end (all versions) and its database dropped.

    python -m bench.throughput_pipeline DATA/faces-dev/images \
        --ground-truth DATA/faces-dev/ground_truth.json --deface bench/.deface-venv/bin/deface

"One worker" means one `veil worker` process (one node) with ``--concurrency`` pool children
(default: the CPU count), which is how a node is deployed.
"""

from __future__ import annotations

import os

os.environ.update({
    "VEIL_DB__URL": "postgresql://postgres@127.0.0.1:5432/veil_bench",
    "VEIL_BROKER__URL": "redis://127.0.0.1:6379/13",
    "VEIL_BROKER__QUEUE_PREFIX": "veil-bench",
    "VEIL_LIMITS__RELAY_GRACE_S": "0",
})

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import psycopg  # noqa: E402
import redis  # noqa: E402

from bench.throughput_redact import (  # noqa: E402
    _VEIL_CHILD,
    _tree_rss_kib,
    proc_stats,
    run_measured,
)
from infra.broker import QUEUE_IMAGES, make_celery, queue_depth  # noqa: E402
from infra.db import apply_migrations  # noqa: E402
from infra.objectstore import client_for, delete_all_versions  # noqa: E402
from infra.policies import get_policy  # noqa: E402
from infra.settings import get_settings  # noqa: E402
from producer.export import export  # noqa: E402
from producer.ingest import IngestOptions, collect_inputs, ingest, wait_for  # noqa: E402

VEIL = str(Path(sys.executable).parent / "veil")


def _fresh_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _cleanup(settings_url: str) -> None:
    settings = get_settings()
    client = client_for("admin", settings)
    with psycopg.connect(settings_url) as conn:
        rows = conn.execute("SELECT raw_bucket, raw_key FROM sources UNION"
                            " SELECT bucket, key FROM artifacts").fetchall()
    for bucket, key in rows:
        delete_all_versions(client, bucket, key)
    name = settings_url.rsplit("/", 1)[1]
    with psycopg.connect(settings_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cpu_seconds() -> dict[str, float]:
    """User + system CPU seconds so far of every process, summed by command name (worker pool
    children, the S3 server, PostgreSQL backends, Redis, this process): where the CPU goes."""
    totals: dict[str, float] = {}
    for stat in proc_stats().values():
        totals[stat.name] = totals.get(stat.name, 0.0) + stat.cpu_s
    return totals


def _stage_medians(settings_url: str) -> dict[str, float]:
    """Median seconds per stage of the image jobs, from the artifacts' recorded timings."""
    with psycopg.connect(settings_url) as conn:
        rows = conn.execute(
            "SELECT t.key, percentile_cont(0.5) WITHIN GROUP (ORDER BY t.value::float)"
            " FROM artifacts a, jsonb_each_text(a.timings) t GROUP BY t.key"
            " UNION ALL SELECT 'guard_s', percentile_cont(0.5) WITHIN GROUP"
            " (ORDER BY (params->'guard'->>'seconds')::float) FROM artifacts").fetchall()
    return {key: round(value * 1000, 1) for key, value in rows if value is not None}


def _start_worker(concurrency: int, out: Path) -> subprocess.Popen[bytes]:
    log = open(out.parent / "worker.log", "ab")  # noqa: SIM115
    return subprocess.Popen([VEIL, "worker", "--concurrency", str(concurrency), "--loglevel",
                             "WARNING", "--without-gossip", "--without-mingle"],
                            stdout=log, stderr=log, start_new_session=True)


def _drain_seconds(settings_url: str) -> float:
    """From the first job's claim to the last job's end, as the ledger recorded them."""
    with psycopg.connect(settings_url) as conn:
        row = conn.execute("SELECT extract(epoch FROM max(finished_at) - min(started_at))"
                           " FROM jobs").fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def run_pipeline(images: Path, concurrency: int, out: Path,
                 drain: bool = False) -> dict[str, object]:
    """Ingest and redact ``images``; with ``drain`` everything is ingested before the worker
    starts, and the time is the worker's alone (first claim to last job done): a node taking a
    deep queue, with the producer elsewhere."""
    settings = get_settings()
    app = make_celery(settings)
    worker = None if drain else _start_worker(concurrency, out)
    peak = [0]
    try:
        if worker is not None:
            time.sleep(3.0)  # worker start-up is not part of the measured path
        items = collect_inputs([str(images)], settings)
        options = IngestOptions(policy=get_policy(None, settings))
        cpu_before = _cpu_seconds()
        started = time.monotonic()
        results = ingest(items, options, settings, app)
        ingest_s = time.monotonic() - started
        queued = None
        if worker is None:
            queued = queue_depth(app, settings, QUEUE_IMAGES)
            cpu_before = _cpu_seconds()
            worker = _start_worker(concurrency, out)
        ids = [r.source_id for r in results if r.source_id]
        deadline = time.monotonic() + 1800
        states: dict[uuid.UUID, tuple[str, str | None]] = {}
        while time.monotonic() < deadline:
            # one look a second: this observer's own CPU is not the pipeline's
            time.sleep(1.0)
            states = wait_for(ids, settings, timeout_s=0)
            peak[0] = max(peak[0], _tree_rss_kib(worker.pid))
            if all(s in ("succeeded", "failed") for s, _ in states.values()):
                break
        seconds = _drain_seconds(settings.db.url) if drain else time.monotonic() - started
        cpu_after = _cpu_seconds()
        parent_cpu_s = proc_stats()[worker.pid].cpu_s
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
    exported = {e.source_id: e.path for e in export(None, out, settings) if e.path}
    for r in results:  # identical bytes under another name: one source, one output; copy it
        target = out / (Path(r.name).stem + (exported[r.source_id].suffix
                                             if r.source_id in exported else ""))
        if r.duplicate and r.source_id in exported and not target.exists():
            shutil.copy(exported[r.source_id], target)
    done = sum(s == "succeeded" for s, _ in states.values())
    return {"seconds": round(seconds, 2), "ingest_seconds": round(ingest_s, 2),
            "succeeded": done, "failed": len(states) - done,
            "duplicates": sum(r.duplicate for r in results),
            "images_per_s": round(len(ids) / seconds, 1),
            "worker_peak_rss_mb": round(peak[0] / 1024, 1), "concurrency": concurrency,
            # the node's Celery main process (messages, acks, Flower's events), beside its
            # children's share in cpu_s_by_process; with --drain, the messages the jobs took
            "worker_main_process_cpu_s": round(parent_cpu_s, 1),
            "images_per_task": settings.limits.images_per_task,
            **({"messages_queued": queued} if queued is not None else {}),
            "measured": "drain: first claim to last job done" if drain
            else "first ingest to last job done",
            "job_stage_median_ms": _stage_medians(settings.db.url),
            "cpu_s_by_process": {name: round(cpu_after[name] - cpu_before.get(name, 0.0), 1)
                                 for name in sorted(cpu_after, key=lambda n: -cpu_after[n]
                                                    + cpu_before.get(n, 0.0))[:8]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path)
    parser.add_argument("--ground-truth", type=Path, help="score coverage of both outputs")
    parser.add_argument("--deface", default="", help="deface CLI of a separate venv")
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--drain", action="store_true",
                        help="ingest everything first, then time the worker alone")
    parser.add_argument("--in-process", action="store_true",
                        help="also run `veil redact` in-process on the same images, first, and "
                             "report the pipeline's share of its throughput")
    args = parser.parse_args()
    settings = get_settings()
    _fresh_database(settings.db.url)
    apply_migrations(settings)
    redis.Redis.from_url(settings.broker.url).flushdb()
    work = Path(tempfile.mkdtemp(prefix="veil-pipeline-bench-"))
    count = sum(1 for p in args.images.iterdir() if p.is_file())
    report: dict[str, object] = {"images": count, "cpus": os.cpu_count()}
    try:
        if args.in_process:
            local = run_measured([sys.executable, "-c", _VEIL_CHILD, str(args.images),
                                  str(work / "veil-local")])
            local["images_per_s"] = round(count / float(local["seconds"]), 1)
            report["veil_in_process"] = local
        report["veil_pipeline"] = run_pipeline(args.images, args.concurrency, work / "veil-out",
                                               drain=args.drain)
        if args.in_process:
            pipeline = report["veil_pipeline"]
            assert isinstance(pipeline, dict)
            report["pipeline_share_of_in_process"] = round(
                float(pipeline["images_per_s"]) / float(local["images_per_s"]), 2)
        if args.deface:
            deface_in = work / "deface"
            shutil.copytree(args.images, deface_in)
            deface = run_measured([args.deface, str(deface_in)])
            deface["images_per_s"] = round(count / float(deface["seconds"]), 1)
            report["deface"] = deface
            pipeline = report["veil_pipeline"]
            assert isinstance(pipeline, dict)
            report["speedup"] = round(pipeline["images_per_s"] / deface["images_per_s"], 2)
        if args.ground_truth:
            from bench.coverage import evaluate_folder
            report["veil_pipeline_coverage"] = evaluate_folder(args.ground_truth,
                                                               work / "veil-out")
            if args.deface:
                report["deface_coverage"] = evaluate_folder(args.ground_truth, work / "deface",
                                                            suffix="_anonymized")
    finally:
        _cleanup(settings.db.url)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
