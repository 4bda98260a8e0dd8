"""The purge: delete objects whose retention ran out, every version, once, never under a hold.

One batch is one PostgreSQL transaction:

1. claim up to ``retention.purge_batch`` due tasks with ``FOR UPDATE SKIP LOCKED``: several
   purgers (beat ticks overlapping, several workers, `veil purge --now`) take disjoint batches;
2. tasks of a source under an active legal hold become ``deferred`` with the hold named;
3. a raw original's data key is destroyed (crypto-shredding) before its object is touched;
4. every version is deleted (threads: S3 round trips dominate), and each task gets a receipt
   (what, when, by which process, checksum, versions) and an audit event; a failure is retried
   after an exponential backoff, and after ``max_attempts`` shows as ``failed`` while retries go on.

The row locks are held while the objects are deleted. That is what makes `veil hold set` safe:
it locks the source's tasks, so it either waits for a purge already deleting them, or the purge
sees the hold. A purger that dies mid-batch rolls back and releases its claims; the next one
deletes again (deleting a missing object is a no-op) and writes the receipt.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from minio import Minio
from psycopg.types.json import Jsonb

from infra import db, keyring, ledger
from infra.db import Conn
from infra.objectstore import client_for, delete_versions
from infra.settings import Settings
from schemas.backoff import backoff_s
from schemas.enums import AuditAction, DeletionState

log = logging.getLogger(__name__)


def purger_identity() -> str:
    """The actor recorded on receipts: the service role, host and pid (never a person)."""
    return f"purge@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class DueDeletion:
    """A claimed deletion task with what the receipt and the hold check need."""

    id: int
    source_id: uuid.UUID | None
    bucket: str
    key: str
    due_at: datetime
    reason: str
    attempts: int
    is_raw: bool
    sha256: str | None
    hold_id: int | None
    hold_reason: str | None


@dataclass
class PurgeReport:
    deleted: int = 0
    deferred: int = 0
    failed: int = 0
    batches: int = 0
    seconds: float = 0.0
    receipts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self, with_receipts: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"deleted": self.deleted, "deferred": self.deferred,
                               "failed": self.failed, "batches": self.batches,
                               "seconds": round(self.seconds, 3), "errors": self.errors}
        if with_receipts:
            out["receipts"] = self.receipts
        return out


_CLAIM_SQL = """
SELECT id FROM deletion_tasks
WHERE state IN ('pending', 'failed') AND due_at <= now()
  AND (next_attempt_at IS NULL OR next_attempt_at <= now())
ORDER BY due_at
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

# A separate statement after the claim: in READ COMMITTED it sees holds committed meanwhile.
_DETAIL_SQL = """
SELECT t.id, t.source_id, t.bucket, t.key, t.due_at, t.reason, t.attempts,
       coalesce(s.raw_bucket = t.bucket AND s.raw_key = t.key, false) AS is_raw,
       coalesce(a.sha256, CASE WHEN s.raw_key = t.key THEN s.sha256 END) AS sha256,
       h.id AS hold_id, h.reason AS hold_reason
FROM deletion_tasks t
LEFT JOIN sources s ON s.id = t.source_id
LEFT JOIN LATERAL (SELECT sha256 FROM artifacts a WHERE a.bucket = t.bucket AND a.key = t.key
                   ORDER BY a.id DESC LIMIT 1) a ON true
LEFT JOIN legal_holds h ON h.source_id = t.source_id AND h.released_at IS NULL
WHERE t.id = ANY(%s)
ORDER BY t.due_at, t.id
"""


def claim_due_deletions(conn: Conn, limit: int) -> list[DueDeletion]:
    """Lock up to ``limit`` due tasks that no other purger holds; call inside a transaction."""
    ids = [r["id"] for r in conn.execute(_CLAIM_SQL, (limit,))]
    if not ids:
        return []
    return [DueDeletion(**r) for r in conn.execute(_DETAIL_SQL, (ids,))]


def due_deletions(settings: Settings, limit: int = 1000) -> list[DueDeletion]:
    """What a purge would take now, without claiming anything (for `veil purge --dry-run`)."""
    with db.connect(settings) as conn:
        ids = [r["id"] for r in conn.execute(_CLAIM_SQL.replace("FOR UPDATE SKIP LOCKED", ""),
                                             (limit,))]
        return [DueDeletion(**r) for r in conn.execute(_DETAIL_SQL, (ids,))] if ids else []


def purge_due(settings: Settings, actor: str | None = None, *, max_runtime_s: float | None = None,
              keep_receipts: bool = False, s3: Minio | None = None) -> PurgeReport:
    """Purge batches until nothing is due (or the time budget is spent)."""
    actor = actor or purger_identity()
    s3 = s3 or client_for("retention", settings)
    budget = settings.retention.purge_max_runtime_s if max_runtime_s is None else max_runtime_s
    report = PurgeReport()
    started = time.monotonic()
    with db.connect(settings, autocommit=True) as conn:
        while time.monotonic() - started < budget:
            claimed = _purge_batch(conn, settings, actor, s3, report, keep_receipts)
            if claimed < settings.retention.purge_batch:
                break
    report.seconds = time.monotonic() - started
    if report.deleted or report.deferred or report.failed:
        log.info("purge by %s: %d deleted, %d deferred, %d failed in %.1f s", actor,
                 report.deleted, report.deferred, report.failed, report.seconds)
    return report


def _purge_batch(conn: Conn, settings: Settings, actor: str, s3: Minio, report: PurgeReport,
                 keep_receipts: bool) -> int:
    with conn.transaction():
        tasks = claim_due_deletions(conn, settings.retention.purge_batch)
        if not tasks:
            return 0
        report.batches += 1
        held = [t for t in tasks if t.hold_id is not None]
        _defer(conn, held, actor)
        report.deferred += len(held)
        todo = [t for t in tasks if t.hold_id is None]
        key_destroyed: dict[uuid.UUID | None, bool] = {
            t.source_id: keyring.destroy_key(conn, t.source_id, actor)
            for t in todo if t.is_raw and t.source_id is not None}
        threads = max(1, min(settings.retention.purge_threads, len(todo)))
        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(lambda t: _delete(s3, t), todo))
        done: list[tuple[DueDeletion, dict[str, Any]]] = []
        failed: list[tuple[DueDeletion, str]] = []
        for task, (versions, deleted_at, error) in zip(todo, outcomes, strict=True):
            if error is not None:
                failed.append((task, error))
                continue
            done.append((task, {
                "task_id": task.id, "source_id": str(task.source_id) if task.source_id else None,
                "bucket": task.bucket, "key": task.key, "versions": versions,
                "sha256": task.sha256, "due_at": task.due_at.isoformat(),
                "deleted_at": deleted_at.isoformat(), "purger": actor, "reason": task.reason,
                **({"key_destroyed": key_destroyed.get(task.source_id, False)}
                   if task.is_raw else {}),
            }))
        _record_done(conn, done, actor)
        _record_failed(conn, failed, actor, settings)
    report.deleted += len(done)
    report.failed += len(failed)
    report.errors.extend(f"deletion task {t.id} ({t.bucket}/{t.key}): {e}" for t, e in failed)
    if keep_receipts:
        report.receipts.extend(r for _, r in done)
    return len(tasks)


def _delete(s3: Minio, task: DueDeletion) -> tuple[list[str | None], datetime, str | None]:
    try:
        versions = delete_versions(s3, task.bucket, task.key)
    except Exception as exc:  # recorded on the task and retried with backoff
        return [], datetime.now(UTC), f"{type(exc).__name__}: {exc}"
    return versions, datetime.now(UTC), None


def _defer(conn: Conn, held: list[DueDeletion], actor: str) -> None:
    if not held:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE deletion_tasks SET state = %s, claimed_by = %s, last_error = %s WHERE id = %s",
            [(str(DeletionState.DEFERRED), actor,
              f"deferred: legal hold {t.hold_id} ({t.hold_reason})", t.id) for t in held])
    for t in held:
        ledger.audit(conn, actor, AuditAction.PURGE_DEFERRED, source_id=t.source_id,
                     bucket=t.bucket, key=t.key,
                     detail={"task_id": t.id, "hold_id": t.hold_id,
                             "due_at": t.due_at.isoformat()})


def _record_done(conn: Conn, done: list[tuple[DueDeletion, dict[str, Any]]], actor: str) -> None:
    if not done:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE deletion_tasks SET state = 'done', done_at = %s, receipt = %s,"
            " attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL,"
            " claimed_by = %s WHERE id = %s",
            [(datetime.fromisoformat(r["deleted_at"]), Jsonb(r), actor, t.id) for t, r in done])
        cur.executemany(
            "INSERT INTO audit_events (actor, action, source_id, bucket, key, detail)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [(actor, str(AuditAction.PURGE), t.source_id, t.bucket, t.key, Jsonb(r))
             for t, r in done])
    _clear_names(conn, [t.source_id for t, _ in done if t.is_raw and t.source_id is not None])


def _clear_names(conn: Conn, source_ids: list[uuid.UUID]) -> None:
    """A file name is personal data (``<first>_<last>_passport.jpg``): it goes with the raw
    original. Camera and capture time go too when the source's policy (as copied at ingest)
    says ``capture_facts_kept_with = "raw"``; otherwise they stay as long as the redacted output,
    because access requests (`veil dsar`) find recordings by them. Erasure removes them all."""
    if source_ids:
        conn.execute(
            "UPDATE sources SET original_name = 'purged', names_cleared_at = now(),"
            " camera = CASE WHEN policy->>'capture_facts_kept_with' = 'raw' THEN NULL"
            " ELSE camera END,"
            " captured_at = CASE WHEN policy->>'capture_facts_kept_with' = 'raw' THEN NULL"
            " ELSE captured_at END"
            " WHERE id = ANY(%s) AND names_cleared_at IS NULL AND erased_at IS NULL",
            (source_ids,))


def _record_failed(conn: Conn, failed: list[tuple[DueDeletion, str]], actor: str,
                   settings: Settings) -> None:
    now = datetime.now(UTC)
    for task, error in failed:
        attempts = task.attempts + 1
        state = DeletionState.FAILED if attempts >= settings.retention.max_attempts \
            else DeletionState.PENDING
        retry_at = now + timedelta(seconds=backoff_s(
            attempts, settings.retention.retry_base_s, settings.retention.retry_max_s))
        conn.execute(
            "UPDATE deletion_tasks SET state = %s, attempts = %s, last_error = %s,"
            " next_attempt_at = %s, claimed_by = %s WHERE id = %s",
            (str(state), attempts, error[:2000], retry_at, actor, task.id))
        ledger.audit(conn, actor, AuditAction.PURGE_FAILED, source_id=task.source_id,
                     bucket=task.bucket, key=task.key,
                     detail={"task_id": task.id, "attempts": attempts, "error": error[:500],
                             "retry_at": retry_at.isoformat()})
        log.warning("deletion task %s (%s/%s) failed, attempt %d, retry at %s: %s", task.id,
                    task.bucket, task.key, attempts, retry_at.isoformat(), error)
