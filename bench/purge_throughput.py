"""Purge throughput and deadline-to-gone latency, against the local stack.

1. Throughput: N due objects (default 5,000, 1 KB each, one version, in the `work` bucket under
   a prefix of this run) are purged by one purger process, then a fresh set by two purger
   processes at once; objects deleted per second from the moment the purgers are released to
   the last exit, plus a check that every task has exactly one receipt.
2. Latency: a real `veil beat` (default schedule: purge every ``retention.purge_interval_s``)
   and one `veil worker` run while objects fall due at staggered times; for each, the time from
   its deadline to its receipt (the moment its last version was deleted), confirmed by listing.

Uses a database, Redis databases and queue prefix of its own, and deletes what it wrote.

    python -m bench.purge_throughput [--objects 5000] [--latency-objects 12] [--spread 150]
"""

from __future__ import annotations

import os

os.environ.update({
    "VEIL_DB__URL": "postgresql://postgres@127.0.0.1:5432/veil_bench_purge",
    "VEIL_BROKER__URL": "redis://127.0.0.1:6379/4",
    "VEIL_BROKER__RESULT_URL": "redis://127.0.0.1:6379/5",
    "VEIL_BROKER__QUEUE_PREFIX": "veil-bench-purge",
})

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import psycopg  # noqa: E402
import redis  # noqa: E402

from infra.db import apply_migrations  # noqa: E402
from infra.objectstore import client_for, delete_all_versions, list_keys, put_bytes  # noqa: E402
from infra.settings import get_settings  # noqa: E402
from workers.retention.purge import purge_due  # noqa: E402

VEIL = str(Path(sys.executable).parent / "veil")


def _fresh_database(url: str, drop_only: bool = False) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            conn.execute(f'CREATE DATABASE "{name}"')


def _seed(prefix: str, count: int, due: list[datetime]) -> list[str]:
    """Put ``count`` objects and their deletion tasks (due times from ``due``, cycled)."""
    settings = get_settings()
    client = client_for("admin", settings)
    bucket = settings.s3.bucket_work
    keys = [f"{prefix}{i:06d}" for i in range(count)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: put_bytes(client, bucket, k, os.urandom(1024)), keys))
    with psycopg.connect(settings.db.url) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO deletion_tasks (bucket, key, due_at, reason)"
                        " VALUES (%s, %s, %s, 'bench')",
                        [(bucket, k, due[i % len(due)]) for i, k in enumerate(keys)])
    return keys


def _purger(go: Any, out: Any) -> None:
    go.wait()
    report = purge_due(get_settings(), max_runtime_s=3600)
    out.put(report.deleted)


def throughput(count: int, purgers: int) -> dict[str, Any]:
    settings = get_settings()
    prefix = f"bench-purge-{uuid.uuid4().hex[:12]}/"
    keys = _seed(prefix, count, [datetime.now(UTC) - timedelta(seconds=1)])
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_purger, args=(go, out)) for _ in range(purgers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # imports done; only the purge is timed
    started = time.monotonic()
    go.set()
    deleted = [out.get(timeout=3600) for _ in procs]
    seconds = time.monotonic() - started
    for p in procs:
        p.join()
    with psycopg.connect(settings.db.url) as conn:
        receipts = conn.execute(
            "SELECT count(*), count(DISTINCT key), count(DISTINCT claimed_by) FROM deletion_tasks"
            " WHERE key LIKE %s AND state = 'done'", (f"{prefix}%",)).fetchone()
        audit = conn.execute("SELECT count(*) FROM audit_events WHERE action = 'purge' AND"
                             " key LIKE %s", (f"{prefix}%",)).fetchone()
    left = sum(1 for _ in list_keys(client_for("admin", settings), settings.s3.bucket_work,
                                    prefix))
    assert receipts is not None and audit is not None
    return {"purgers": purgers, "objects": len(keys), "deleted_per_purger": deleted,
            "seconds": round(seconds, 2), "objects_per_s": round(sum(deleted) / seconds, 1),
            "tasks_done": receipts[0], "distinct_keys": receipts[1],
            "purgers_with_receipts": receipts[2], "audit_events": audit[0],
            "objects_left": left}


def latency(count: int, spread_s: float, log_dir: Path) -> dict[str, Any]:
    """Deadline to gone with the real beat schedule (its interval from settings)."""
    settings = get_settings()
    env = {**os.environ, "VEIL_STACK__STATE_DIR": str(log_dir)}
    log = open(log_dir / "services.log", "ab")  # noqa: SIM115
    procs = [subprocess.Popen([VEIL, "worker", "--concurrency", "1", "--loglevel", "INFO",
                               "--without-gossip", "--without-mingle"],
                              env=env, stdout=log, stderr=log, start_new_session=True),
             subprocess.Popen([VEIL, "beat", "--loglevel", "INFO"], env=env, stdout=log,
                              stderr=log, start_new_session=True)]
    try:
        time.sleep(5.0)
        prefix = f"bench-latency-{uuid.uuid4().hex[:12]}/"
        now = datetime.now(UTC)
        due = [now + timedelta(seconds=10 + spread_s * i / max(1, count - 1))
               for i in range(count)]
        keys = _seed(prefix, count, due)
        deadline = time.monotonic() + spread_s + 4 * settings.retention.purge_interval_s + 60
        rows: list[tuple[Any, ...]] = []
        while time.monotonic() < deadline:
            with psycopg.connect(settings.db.url) as conn:
                rows = conn.execute(
                    "SELECT key, due_at, done_at FROM deletion_tasks WHERE key LIKE %s",
                    (f"{prefix}%",)).fetchall()
            if rows and all(r[2] is not None for r in rows):
                break
            time.sleep(2.0)
        left = sum(1 for _ in list_keys(client_for("admin", settings), settings.s3.bucket_work,
                                        prefix))
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
    waits = sorted((r[2] - r[1]).total_seconds() for r in rows if r[2] is not None)
    return {"objects": len(keys), "gone": len(waits), "objects_left_in_s3": left,
            "purge_interval_s": settings.retention.purge_interval_s,
            "deadline_to_gone_s": {"min": round(waits[0], 1),
                                   "median": round(statistics.median(waits), 1),
                                   "max": round(waits[-1], 1)} if waits else None}


def _cleanup() -> None:
    settings = get_settings()
    client = client_for("admin", settings)
    with psycopg.connect(settings.db.url) as conn:
        rows = conn.execute("SELECT bucket, key FROM deletion_tasks WHERE state <> 'done'"
                            ).fetchall()
    for bucket, key in rows:
        delete_all_versions(client, bucket, key)
    _fresh_database(settings.db.url, drop_only=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--latency-objects", type=int, default=12)
    parser.add_argument("--spread", type=float, default=150.0,
                        help="seconds over which the latency objects fall due")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    settings = get_settings()
    _fresh_database(settings.db.url)
    apply_migrations(settings)
    redis.Redis.from_url(settings.broker.url).flushdb()
    try:
        for purgers in (1, 2):
            print(json.dumps({"throughput": throughput(args.objects, purgers)}), flush=True)
        if not args.skip_latency:
            with tempfile.TemporaryDirectory(prefix="veil-bench-") as tmp:
                print(json.dumps({"latency": latency(args.latency_objects, args.spread,
                                                     Path(tmp))}), flush=True)
    finally:
        _cleanup()


if __name__ == "__main__":
    main()
