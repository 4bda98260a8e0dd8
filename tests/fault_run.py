"""The fault run on a :class:`tests.fault_stack.FaultStack`: ingest images, then, while workers
redact them, SIGKILL pool children and worker parents, restart Redis and PostgreSQL, stop S3 for
a while and kill an ingest after its upload; then drain and check what must hold:

- every job is terminal (succeeded, or failed with a reason);
- exactly one artifact per succeeded job, and none for the others;
- no object in raw, work or redacted without a live deletion task (invariant 9);
- the killed ingest's uploads have their intent (a deletion task written before the bytes).

Recovery per fault: for a killed worker, from the kill until each job it held is claimed again
by another process (or finished); for a service, from its restart until a job finishes again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from infra.reconcile import INTENT_REASON
from schemas.keys import raw_key, sha256_hex
from tests.conftest import face_image, jpeg_bytes
from tests.fault_stack import VEIL, FaultStack
from workers.retention.reconcile import list_objects

TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class FaultReport:
    faults: list[dict[str, Any]] = field(default_factory=list)
    jobs: dict[str, int] = field(default_factory=dict)
    drain_s: float = 0.0
    errors: list[str] = field(default_factory=list)

    def worst(self, field_name: str, kind: str | None = None) -> float:
        return max((f[field_name] for f in self.faults if f.get(field_name) is not None
                    and (kind is None or f["kind"] == kind)), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"faults": self.faults, "jobs": self.jobs, "drain_s": round(self.drain_s, 1),
                "worst_lost_worker_requeue_s": self.worst("requeued_s", "worker"),
                "worst_lost_worker_reclaim_s": self.worst("recovery_s", "worker"),
                "worst_recovery_s": self.worst("recovery_s"), "errors": self.errors}


def rows(fs: FaultStack, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(fs.settings.db.url, row_factory=dict_row, connect_timeout=3) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def write_images(folder: Path, count: int, seed: int, size: int = 64) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img{i:04d}.jpg"
        path.write_bytes(jpeg_bytes(face_image(seed + i, size=size)))
        paths.append(path)
    return paths


def ingest(fs: FaultStack, folder: Path) -> None:
    done = subprocess.run([VEIL, "ingest", str(folder), "--json"], env=fs.env(),
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"ingest failed ({done.returncode}): {done.stderr[-2000:]}")


def _poll(until: Callable[[], bool], timeout_s: float, step_s: float = 0.25) -> float | None:
    """Seconds until ``until()`` held, or None when it did not within the timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if until():
                return time.monotonic() - started
        except psycopg.Error:
            pass  # PostgreSQL restarting: ask again
        time.sleep(step_s)
    return None


def running_jobs(fs: FaultStack) -> list[dict[str, Any]]:
    return rows(fs, "SELECT id, worker FROM jobs WHERE state = 'running'")


def _busy_pid(fs: FaultStack, worker: str, timeout_s: float = 60) -> int | None:
    """A pool child of ``worker`` that holds a running job."""
    found: list[int] = []

    def look() -> bool:
        children = set(fs.children(worker))
        found[:] = [int(j["worker"].rsplit(":", 1)[1]) for j in running_jobs(fs)
                    if j["worker"] and int(j["worker"].rsplit(":", 1)[1]) in children]
        return bool(found)
    return found[0] if _poll(look, timeout_s) is not None else None


def _recovered(fs: FaultStack, job_ids: list[str], lost: set[str], since: float,
               queued_counts: bool) -> Callable[[], bool]:
    """True once each job is finished, or claimed after ``since`` (wall clock) by a worker not
    in ``lost``, or (with ``queued_counts``) back in the queue."""
    def check() -> bool:
        got = rows(fs, "SELECT state, worker, extract(epoch FROM started_at) AS started"
                   " FROM jobs WHERE id = ANY(%s::uuid[])", job_ids)
        return all(r["state"] in TERMINAL or (queued_counts and r["state"] == "queued")
                   or (r["state"] == "running" and r["worker"] not in lost
                       and float(r["started"]) > since) for r in got)
    return check


def kill_worker(fs: FaultStack, report: FaultReport, worker: str, parent: bool,
                timeout_s: float) -> None:
    """SIGKILL a busy pool child of ``worker`` (or the whole worker: parent and children) and
    time until its jobs are claimed again elsewhere; a killed parent is restarted."""
    pid = _busy_pid(fs, worker)
    if pid is None:
        report.errors.append(f"{worker}: no busy pool child to kill")
        return
    pids = set(fs.children(worker)) if parent else {pid}
    since = time.time()
    if parent:
        fs.stop(worker, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)
    # read after the kill: what the dead processes held stays as it was
    held = [str(j["id"]) for j in running_jobs(fs)
            if j["worker"] and int(j["worker"].rsplit(":", 1)[1]) in pids]
    lost = {j["worker"] for j in running_jobs(fs) if str(j["id"]) in held}
    requeued = _poll(_recovered(fs, held, lost, since, queued_counts=True), timeout_s)
    reclaimed = _poll(_recovered(fs, held, lost, since, queued_counts=False), timeout_s)
    if reclaimed is not None and requeued is not None:
        reclaimed += requeued
    if parent:
        fs.start_worker(worker)
    report.faults.append({"fault": f"SIGKILL {'worker parent' if parent else 'pool child'}"
                                   f" ({worker})", "kind": "worker", "jobs_held": len(held),
                          "requeued_s": None if requeued is None else round(requeued, 1),
                          "recovery_s": None if reclaimed is None else round(reclaimed, 1)})


def _finished_count(fs: FaultStack) -> int:
    return int(rows(fs, "SELECT count(*) AS n FROM jobs WHERE state = 'succeeded'")[0]["n"])


def restart_service(fs: FaultStack, report: FaultReport, name: str, stop: Callable[[], None],
                    start: Callable[[], None], down_s: float, timeout_s: float) -> None:
    """Stop a service, keep it down ``down_s``, start it; time from its start until one more
    job succeeds (work goes on), or until nothing is left to do."""
    stop()
    time.sleep(down_s)
    start()
    counted: list[int] = []  # jobs done once the ledger answers again (PostgreSQL may restart)
    _poll(lambda: _record_count(counted, fs), 30)
    before = counted[-1] if counted else 0
    recovery = _poll(lambda: _finished_count(fs) > before or not _pending(fs), timeout_s)
    report.faults.append({"fault": f"{name} down {down_s:.0f} s, restarted", "kind": "service",
                          "recovery_s": None if recovery is None else round(recovery, 1)})


def _record_count(counted: list[int], fs: FaultStack) -> bool:
    counted.append(_finished_count(fs))
    return True


def _pending(fs: FaultStack) -> int:
    return int(rows(fs, "SELECT count(*) AS n FROM jobs WHERE state NOT IN"
                    " ('succeeded', 'failed', 'cancelled')")[0]["n"])


def kill_ingest_after_upload(fs: FaultStack, report: FaultReport, folder: Path) -> list[str]:
    """`veil ingest` paused after its upload (fault hook), SIGKILLed once every original is in
    raw; returns their raw keys."""
    keys = [raw_key(sha256_hex(p.read_bytes()), "jpg") for p in sorted(folder.iterdir())]
    proc = subprocess.Popen([VEIL, "ingest", str(folder)], env=fs.env(
        VEIL_TEST_INGEST_PAUSE_S="120"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    raw = fs.settings.s3.bucket_raw
    uploaded = _poll(lambda: set(keys) <= {k for k, _ in list_objects(fs.settings, raw)}, 60)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    report.faults.append({"fault": f"ingest SIGKILLed after uploading {len(keys)} originals",
                          "kind": "ingest", "recovery_s": None,
                          "uploaded": uploaded is not None})
    return keys


def drain(fs: FaultStack, report: FaultReport, timeout_s: float, started: float) -> None:
    _poll(lambda: _pending(fs) == 0, timeout_s, step_s=0.5)
    report.drain_s = time.monotonic() - started
    report.jobs = {r["state"]: int(r["n"]) for r in rows(
        fs, "SELECT state, count(*) AS n FROM jobs GROUP BY state")}


def check_invariants(fs: FaultStack, report: FaultReport, intent_keys: list[str]) -> None:
    """What must hold after the run; each breach is added to ``report.errors``."""
    if _pending(fs):
        report.errors.append(f"{_pending(fs)} jobs not terminal: {report.jobs}")
    for r in rows(fs, "SELECT j.id, j.state, count(a.id) AS n FROM jobs j LEFT JOIN artifacts a"
                  " ON a.job_id = j.id GROUP BY j.id, j.state"):
        wanted = 1 if r["state"] == "succeeded" else 0
        if r["n"] != wanted:
            report.errors.append(f"job {r['id']} ({r['state']}) has {r['n']} artifacts")
    live = {(r["bucket"], r["key"]) for r in rows(
        fs, "SELECT bucket, key FROM deletion_tasks WHERE state <> 'done'")}
    s3 = fs.settings.s3
    for bucket in (s3.bucket_raw, s3.bucket_work, s3.bucket_redacted):
        for key, _ in list_objects(fs.settings, bucket):
            if (bucket, key) not in live:
                report.errors.append(f"{bucket}/{key} has no live deletion task")
    intents = {r["key"] for r in rows(fs, "SELECT key FROM deletion_tasks WHERE reason = %s",
                                      INTENT_REASON)}
    missing = [k for k in intent_keys if k not in intents]
    if missing:
        report.errors.append(f"{len(missing)} killed-ingest uploads have no intent: {missing}")
    for r in rows(fs, "SELECT id, error FROM jobs WHERE state = 'failed'"):
        report.errors.append(f"job {r['id']} failed: {r['error']}")


def status_json(fs: FaultStack) -> dict[str, Any]:
    done = subprocess.run([VEIL, "status", "--json"], env=fs.env(), capture_output=True,
                          text=True, timeout=60)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr}
