"""The long fault run: drain time and recovery per fault, with the default lease settings.

A private Redis, PostgreSQL cluster and SeaweedFS (tests/fault_stack.py), two workers of two
pool children each and beat. Before each fault it ingests ``--batch`` small images (each job
held ``--job-delay`` seconds, a stand-in for a slow image), so that jobs run when it SIGKILLs
pool children and whole workers ``--kills`` times each, restarts Redis and PostgreSQL, kills an
ingest after its upload and stops S3 for ``--s3-down`` seconds; then it drains and checks that
every job is terminal, one artifact per succeeded job, and no object without a live deletion
task.

The lease settings are the defaults (60 s lease, 20 s heartbeat, 60 s sweep) unless given;
``requeue_after_s`` is 60 s here (default 1800 s) so that the messages a Redis restart loses
come back within the run. Prints one JSON object.

    python -m bench.faults [--batch 16] [--kills 2] [--job-delay 4] [--s3-down 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tests.fault_run import (
    FaultReport,
    check_invariants,
    drain,
    ingest,
    kill_ingest_after_upload,
    kill_worker,
    restart_service,
    write_images,
)
from tests.fault_stack import FaultStack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="images ingested before each fault")
    parser.add_argument("--kills", type=int, default=2, help="kills of each kind")
    parser.add_argument("--job-delay", type=float, default=4.0)
    parser.add_argument("--s3-down", type=float, default=20.0)
    parser.add_argument("--lease", type=int, default=60)
    parser.add_argument("--heartbeat", type=int, default=20)
    parser.add_argument("--sweep", type=int, default=60)
    args = parser.parse_args()
    limits = {"job_lease_s": args.lease, "heartbeat_interval_s": args.heartbeat,
              "sweep_interval_s": args.sweep, "requeue_after_s": 60}
    bound = args.lease + args.sweep
    fs = FaultStack(limits, job_delay_s=args.job_delay)
    report = FaultReport()
    images = 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            fs.start()
            for name in ("wa", "wb"):
                fs.start_worker(name)
            fs.start_beat()
            batches = iter(range(1, 100))

            def feed() -> None:
                """A fresh batch before each fault, so jobs are running when it strikes."""
                n = next(batches)
                ingest(fs, write_images(Path(tmp) / f"b{n}", args.batch, seed=1000 * n)[0].parent)
            ingested = time.monotonic()
            for i in range(args.kills):
                feed()
                kill_worker(fs, report, "wa" if i % 2 else "wb", parent=False,
                            timeout_s=3 * bound)
                feed()
                kill_worker(fs, report, "wb" if i % 2 else "wa", parent=True,
                            timeout_s=3 * bound)
            feed()
            restart_service(fs, report, "Redis", lambda: fs.stop("redis"), fs.start_redis, 2,
                            3 * bound)
            feed()
            restart_service(fs, report, "PostgreSQL", fs.stop_postgres, fs.start_postgres, 2,
                            3 * bound)
            killed = write_images(Path(tmp) / "killed", 3, seed=7)[0].parent
            intent_keys = kill_ingest_after_upload(fs, report, killed)
            feed()
            restart_service(fs, report, "S3", fs.kill_s3, fs.start_s3, args.s3_down, 3 * bound)
            drain(fs, report, 30 * 60, ingested)
            images = (next(batches) - 1) * args.batch
            check_invariants(fs, report, intent_keys)
        finally:
            fs.close()
    out = {"settings": {**limits, "job_delay_s": args.job_delay, "images": images,
                        "lost_worker_requeue_bound_s": bound},
           **report.as_dict(), "total_s": round(time.monotonic() - started, 1)}
    print(json.dumps(out, indent=2))
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
