"""The short fault run (invariants 2 and 9 from outside): a private Redis, PostgreSQL cluster and
SeaweedFS, two real workers and beat, short leases set through the environment (6 s, renewed
every 2 s, swept every 3 s). While the workers redact, a pool child and a whole worker are
SIGKILLed, Redis and PostgreSQL are restarted, an ingest is killed after its upload and S3 is
down for 20 s; then every job succeeded with exactly one artifact, every object has a live
deletion task, and each fault recovered. The figures are printed (`pytest -s`); the long run
with defaults is ``bench/faults.py``."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

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
from tests.fault_stack import PG_BIN, FaultStack

SHORT_LIMITS = {"job_lease_s": 6, "heartbeat_interval_s": 2, "sweep_interval_s": 3,
                "requeue_after_s": 15, "max_attempts": 12, "retry_backoff_max_s": 4,
                "relay_grace_s": 2}
IMAGES, LATE = 20, 8  # the late ones are queued or running when S3 goes down


def test_faults_lose_no_job_and_leave_no_object_unrecorded(tmp_path: Path,
                                                           unique_seed: int) -> None:
    if not (PG_BIN / "initdb").exists() or shutil.which("redis-server") is None:
        pytest.fail(f"the fault run needs {PG_BIN}/initdb (apt: postgresql-15) and redis-server")
    fs = FaultStack(SHORT_LIMITS, job_delay_s=1.5)
    report = FaultReport()
    try:
        # given a private stack, two workers (two pool children each) and beat
        fs.start()
        for name in ("wa", "wb", "beat"):
            fs.start_beat() if name == "beat" else fs.start_worker(name)
        started = time.monotonic()
        ingest(fs, write_images(tmp_path / "in", IMAGES, unique_seed)[0].parent)
        # when faults strike while the jobs run
        with ThreadPoolExecutor(2) as pool:  # a pool child of one, the whole other, at once
            list(pool.map(lambda args: kill_worker(fs, report, *args, timeout_s=60),
                          [("wa", False), ("wb", True)]))
        restart_service(fs, report, "Redis", lambda: fs.stop("redis"), fs.start_redis, 1, 60)
        restart_service(fs, report, "PostgreSQL", fs.stop_postgres, fs.start_postgres, 1, 60)
        killed = write_images(tmp_path / "killed", 2, unique_seed + 10_000)[0].parent
        intent_keys = kill_ingest_after_upload(fs, report, killed)
        ingest(fs, write_images(tmp_path / "late", LATE, unique_seed + 20_000)[0].parent)
        restart_service(fs, report, "S3", fs.kill_s3, fs.start_s3, 20, 90)
        drain(fs, report, 180, started)
        check_invariants(fs, report, intent_keys)
    finally:
        print(json.dumps(report.as_dict(), indent=2))
        if report.errors:
            for name in ("wa", "wb", "beat"):
                print(f"--- {name} log ---\n{fs.log_tail(name)}")
        fs.close()
    # then no job was lost or doubled, nothing is unrecorded, and every fault recovered
    assert report.errors == []
    assert report.jobs == {"succeeded": IMAGES + LATE}
    assert all(f["recovery_s"] is not None for f in report.faults if f["kind"] != "ingest")
    assert [f["uploaded"] for f in report.faults if f["kind"] == "ingest"] == [True]
