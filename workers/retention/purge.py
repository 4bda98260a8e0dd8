"""The purge: delete objects whose retention ran out, every version, once, never under a hold.

One batch is one PostgreSQL transaction:

1. claim up to ``retention.purge_batch`` due tasks with ``FOR UPDATE SKIP LOCKED``: several
   purgers (beat ticks overlapping, several workers, `veil purge --now`) take disjoint batches;
2. tasks of a source under an active legal hold become ``deferred`` with the hold named;
3. a raw original's data key is destroyed (crypto-shredding) before its object is touched;
4. every version is deleted, a bucket at a time (``infra.objectstore_bulk``: listings of key
   ranges, DeleteObjects requests in ``retention.purge_threads`` threads, a listing after to
   prove them gone), and each task gets a receipt (what, when, by which process, checksum,
   versions) and an audit event; an object the server refused fails only its own task, which
   is retried after an exponential backoff and after ``max_attempts`` shows as ``failed``
   while retries go on.

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
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from minio import Minio

from infra import db, keyring
from infra.db import Conn
from infra.ledger_deletions import (
    DeletionFailure,
    DueDeletion,
    claim_due_deletions,
    defer_held_deletions,
    peek_due_deletions,
    record_deletion_failures,
    record_deletions,
)
from infra.objectstore import client_for
from infra.objectstore_bulk import KeyOutcome, delete_every_version
from infra.settings import Settings
from schemas.backoff import backoff_s
from schemas.enums import DeletionState

log = logging.getLogger(__name__)


def purger_identity() -> str:
    """The actor recorded on receipts: the service role, host and pid (never a person)."""
    return f"purge@{socket.gethostname()}:{os.getpid()}"


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


def due_deletions(settings: Settings, limit: int = 1000) -> list[DueDeletion]:
    """What a purge would take now, without claiming anything (for `veil purge --dry-run`)."""
    with db.connect(settings) as conn:
        return peek_due_deletions(conn, limit)


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
        defer_held_deletions(conn, held, actor)
        report.deferred += len(held)
        todo = [t for t in tasks if t.hold_id is None]
        key_destroyed: dict[uuid.UUID | None, bool] = {
            t.source_id: keyring.destroy_key(conn, t.source_id, actor)
            for t in todo if t.is_raw and t.source_id is not None}
        outcomes = _delete(s3, todo, settings.retention.purge_threads)
        done: list[tuple[DueDeletion, dict[str, Any]]] = []
        failed: list[DeletionFailure] = []
        for task in todo:
            outcome = outcomes[(task.bucket, task.key)]
            if outcome.error is not None:
                failed.append(_failure(task, outcome.error, settings))
            else:
                done.append((task, _receipt(task, outcome, actor, key_destroyed)))
        record_deletions(conn, done, actor)
        record_deletion_failures(conn, failed, actor)
    report.deleted += len(done)
    report.failed += len(failed)
    report.errors.extend(f"deletion task {f.task.id} ({f.task.bucket}/{f.task.key}): {f.error}"
                         for f in failed)
    if keep_receipts:
        report.receipts.extend(r for _, r in done)
    return len(tasks)


def _delete(s3: Minio, tasks: list[DueDeletion],
            threads: int) -> dict[tuple[str, str], KeyOutcome]:
    """Every version of every task's object, a bucket at a time; by (bucket, key)."""
    by_bucket: dict[str, list[str]] = defaultdict(list)
    for task in tasks:
        by_bucket[task.bucket].append(task.key)
    return {(bucket, key): outcome for bucket, keys in by_bucket.items()
            for key, outcome in delete_every_version(s3, bucket, keys, threads).items()}


def _receipt(task: DueDeletion, outcome: KeyOutcome, actor: str,
             key_destroyed: dict[uuid.UUID | None, bool]) -> dict[str, Any]:
    deleted_at = outcome.deleted_at or datetime.now(UTC)
    return {
        "task_id": task.id, "source_id": str(task.source_id) if task.source_id else None,
        "bucket": task.bucket, "key": task.key, "versions": outcome.versions,
        "sha256": task.sha256, "due_at": task.due_at.isoformat(),
        "deleted_at": deleted_at.isoformat(), "purger": actor, "reason": task.reason,
        **({"key_destroyed": key_destroyed.get(task.source_id, False)} if task.is_raw else {}),
    }


def _failure(task: DueDeletion, error: str, settings: Settings) -> DeletionFailure:
    attempts = task.attempts + 1
    retry_at = datetime.now(UTC) + timedelta(seconds=backoff_s(
        attempts, settings.retention.retry_base_s, settings.retention.retry_max_s))
    log.warning("deletion task %s (%s/%s) failed, attempt %d, retry at %s: %s", task.id,
                task.bucket, task.key, attempts, retry_at.isoformat(), error)
    return DeletionFailure(task, error, attempts,
                           DeletionState.FAILED if attempts >= settings.retention.max_attempts
                           else DeletionState.PENDING, retry_at)
