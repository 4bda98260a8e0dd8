"""The deletion tasks: scheduling them, and the purge's claims, receipts, deferrals and failures.

Owner of ``deletion_tasks`` (invariants 3, 4 and 9): every object gets a task in the transaction
that records it; the purge claims due tasks with ``FOR UPDATE SKIP LOCKED`` and, in the same
transaction, writes one receipt and one audit event per deleted object. The writes of one batch
are ``executemany`` statements (psycopg pipelines them: one round trip a batch, not a row).
The other rooms' statements on the table live here too, each run in its caller's transaction:
the reconciler's orphans, the erasure's receipts and locks (``veil_retention``), and the
deferred deletions a released hold makes due again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NotRequired, TypedDict

from psycopg import Cursor
from psycopg.types.json import Jsonb

from infra.db import Conn
from schemas.enums import AuditAction, DeletionState, JobState

# The due time of objects a policy keeps until they are erased: every object still gets a
# deletion task, so the ledger lists it and erasure finds it.
KEEP_UNTIL_ERASED = datetime(9999, 12, 31, tzinfo=UTC)


def schedule_deletion(
    conn: Conn,
    source_id: uuid.UUID | str | None,
    bucket: str,
    key: str,
    due_at: datetime,
    reason: str,
) -> None:
    """Write (or move) the deletion task of an object; called in the object's own transaction.

    A task written before its object (an ingest's upload intent, ``source_id`` None) is taken
    over by the object's record: its source, due time and reason replace the intent's."""
    conn.execute(
        "INSERT INTO deletion_tasks (source_id, bucket, key, due_at, reason)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (bucket, key) DO UPDATE"
        " SET due_at = EXCLUDED.due_at, reason = EXCLUDED.reason,"
        " source_id = coalesce(EXCLUDED.source_id, deletion_tasks.source_id)"
        " WHERE deletion_tasks.state <> 'done'",
        (source_id, bucket, key, due_at, reason),
    )


def schedule_output_deletion(conn: Conn, source_id: uuid.UUID | str, bucket: str, key: str,
                             keep_s: int | None, policy_label: str) -> None:
    """The deletion task of a published output: due after the policy's ``keep_s`` seconds, or
    ``KEEP_UNTIL_ERASED`` when the policy keeps outputs (``keep_s`` None)."""
    due = KEEP_UNTIL_ERASED if keep_s is None else datetime.now(UTC) + timedelta(seconds=keep_s)
    schedule_deletion(conn, source_id, bucket, key, due,
                      reason=f"policy {policy_label}: redacted "
                             + ("kept until erased" if keep_s is None else "retention"))


def schedule_inbox_deletion(conn: Conn, bucket: str, key: str,
                            source_id: uuid.UUID | None) -> None:
    """An inbox upload is plaintext: once its raw copy is committed, its key is due for deletion
    at once. The retention worker deletes every version with a receipt and an audit event; a
    crash before that leaves the task due, so the next purge does it. A key uploaded again after
    an earlier deletion gets its task back (pending, due now)."""
    conn.execute(
        "INSERT INTO deletion_tasks (source_id, bucket, key, due_at, reason)"
        " VALUES (%s, %s, %s, now(), 'inbox upload ingested') ON CONFLICT (bucket, key)"
        " DO UPDATE SET due_at = now(), reason = EXCLUDED.reason, state = 'pending',"
        " next_attempt_at = NULL", (source_id, bucket, key))


# --- the purge ----------------------------------------------------------------------------------

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


_DUE_SQL = """
SELECT id FROM deletion_tasks
WHERE state IN ('pending', 'failed') AND due_at <= now()
  AND (next_attempt_at IS NULL OR next_attempt_at <= now())
ORDER BY due_at
LIMIT %s
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
LEFT JOIN active_legal_holds h ON h.source_id = t.source_id
WHERE t.id = ANY(%s)
ORDER BY t.due_at, t.id
"""


def claim_due_deletions(conn: Conn, limit: int) -> list[DueDeletion]:
    """Lock up to ``limit`` due tasks that no other purger holds; call inside a transaction.

    The locks are held until the transaction ends: `veil hold set` locks a source's tasks, so
    it waits for a purge that is deleting them, or the purge sees its hold."""
    ids = [r["id"] for r in conn.execute(_DUE_SQL + "FOR UPDATE SKIP LOCKED", (limit,))]
    return [DueDeletion(**r) for r in conn.execute(_DETAIL_SQL, (ids,))] if ids else []


def peek_due_deletions(conn: Conn, limit: int) -> list[DueDeletion]:
    """What a purge would take now, claiming nothing (for `veil purge --dry-run`)."""
    ids = [r["id"] for r in conn.execute(_DUE_SQL, (limit,))]
    return [DueDeletion(**r) for r in conn.execute(_DETAIL_SQL, (ids,))] if ids else []


def _audit_many(cur: Cursor[Any], actor: str, action: AuditAction,
                events: list[tuple[DueDeletion, dict[str, Any]]]) -> None:
    """One audit event per task (append-only, invariant 3), in one statement."""
    cur.executemany(
        "INSERT INTO audit_events (actor, action, source_id, bucket, key, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        [(actor, str(action), t.source_id, t.bucket, t.key, Jsonb(d)) for t, d in events])


def defer_held_deletions(conn: Conn, held: list[DueDeletion], actor: str) -> None:
    """Tasks of a source under legal hold wait, naming the hold; `veil hold release` resumes
    them (a deferred task is not claimed again, so it is audited once)."""
    if not held:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE deletion_tasks SET state = %s, claimed_by = %s, last_error = %s WHERE id = %s",
            [(str(DeletionState.DEFERRED), actor,
              f"deferred: legal hold {t.hold_id} ({t.hold_reason})", t.id) for t in held])
        _audit_many(cur, actor, AuditAction.PURGE_DEFERRED, [
            (t, {"task_id": t.id, "hold_id": t.hold_id, "due_at": t.due_at.isoformat()})
            for t in held])


def record_deletions(conn: Conn, done: list[tuple[DueDeletion, dict[str, Any]]],
                     actor: str) -> None:
    """Each deleted object's receipt on its task and in its audit event; a raw original's
    names go with it (see :func:`_clear_names`)."""
    if not done:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE deletion_tasks SET state = 'done', done_at = %s, receipt = %s,"
            " attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL,"
            " claimed_by = %s WHERE id = %s",
            [(datetime.fromisoformat(r["deleted_at"]), Jsonb(r), actor, t.id) for t, r in done])
        _audit_many(cur, actor, AuditAction.PURGE, done)
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


@dataclass(frozen=True)
class DeletionFailure:
    """A task whose objects were not all deleted, and when the purge tries again."""

    task: DueDeletion
    error: str
    attempts: int
    state: DeletionState
    retry_at: datetime


def record_deletion_failures(conn: Conn, failures: list[DeletionFailure], actor: str) -> None:
    """The error and the retry time on each task, and an audit event each (loud, invariant 4)."""
    if not failures:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE deletion_tasks SET state = %s, attempts = %s, last_error = %s,"
            " next_attempt_at = %s, claimed_by = %s WHERE id = %s",
            [(str(f.state), f.attempts, f.error[:2000], f.retry_at, actor, f.task.id)
             for f in failures])
        _audit_many(cur, actor, AuditAction.PURGE_FAILED, [
            (f.task, {"task_id": f.task.id, "attempts": f.attempts, "error": f.error[:500],
                      "retry_at": f.retry_at.isoformat()}) for f in failures])


def schedule_orphan_deletions(conn: Conn, bucket: str, keys: list[str],
                              sources: list[uuid.UUID | None], reason: str) -> list[str]:
    """The reconciler's write: each of ``keys`` (with the source its name points to, if any)
    that has no live deletion task (pending, failed or deferred) and whose source has no live
    job gets a task due now; a done task (its object purged, an object there again) comes back.
    The check and the write are one statement, so a record committed meanwhile wins. Returns
    the keys that got a task. Run as the retention role."""
    rows = conn.execute(
        "INSERT INTO deletion_tasks (source_id, bucket, key, due_at, reason)"
        " SELECT NULL, %(bucket)s, k.key, now(), %(reason)s"
        " FROM unnest(%(keys)s::text[], %(sources)s::uuid[]) AS k(key, src)"
        " WHERE NOT EXISTS (SELECT 1 FROM deletion_tasks d WHERE d.bucket = %(bucket)s"
        "  AND d.key = k.key AND d.state <> %(done)s)"
        " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.source_id = k.src"
        "  AND j.state = ANY(%(live)s))"
        " ON CONFLICT (bucket, key) DO UPDATE SET state = %(pending)s, due_at = now(),"
        " reason = EXCLUDED.reason, done_at = NULL, attempts = 0, next_attempt_at = NULL,"
        " last_error = NULL WHERE deletion_tasks.state = %(done)s RETURNING key",
        {"bucket": bucket, "reason": reason, "keys": keys, "sources": sources,
         "done": str(DeletionState.DONE), "pending": str(DeletionState.PENDING),
         "live": [str(JobState.QUEUED), str(JobState.RUNNING)]}).fetchall()
    return [r["key"] for r in rows]


# --- written for other rooms, in their own transactions ------------------------------------

class ObjectReceipt(TypedDict):
    """What happened to one object: its versions removed and when, or the error."""

    bucket: str
    key: str
    versions: list[str | None]
    deleted_at: str | None
    error: NotRequired[str]


_ERASURE_FAILED = (
    "INSERT INTO deletion_tasks (source_id, bucket, key, due_at, reason, attempts, last_error,"
    " next_attempt_at) VALUES (%s, %s, %s, now(), 'erasure', 1, %s, %s)"
    " ON CONFLICT (bucket, key) DO UPDATE SET state = %s, due_at = now(),"
    " reason = EXCLUDED.reason, attempts = deletion_tasks.attempts + 1,"
    " last_error = EXCLUDED.last_error, next_attempt_at = EXCLUDED.next_attempt_at")

# An earlier purge's receipt stays when nothing was left to delete (the last parameter).
_ERASURE_DONE = (
    "INSERT INTO deletion_tasks (source_id, bucket, key, due_at, reason, state, attempts,"
    " done_at, receipt, claimed_by) VALUES (%s, %s, %s, now(), 'erasure', %s, 1, %s, %s, %s)"
    " ON CONFLICT (bucket, key) DO UPDATE SET state = EXCLUDED.state,"
    " done_at = EXCLUDED.done_at, receipt = EXCLUDED.receipt, last_error = NULL,"
    " next_attempt_at = NULL, claimed_by = EXCLUDED.claimed_by,"
    " reason = deletion_tasks.reason || '; erased'"
    " WHERE deletion_tasks.state <> EXCLUDED.state OR %s")


def record_erased_objects(conn: Conn, source_id: uuid.UUID, outcomes: Sequence[ObjectReceipt],
                          actor: str, retry_at: datetime) -> None:
    """One deletion task per object: done with its receipt, or due again at ``retry_at`` with
    the error (the purge retries it with backoff)."""
    failed = [(source_id, o["bucket"], o["key"], o["error"][:2000], retry_at,
               str(DeletionState.PENDING)) for o in outcomes if o.get("error")]
    done = [(source_id, o["bucket"], o["key"], str(DeletionState.DONE),
             datetime.fromisoformat(str(o["deleted_at"])),
             Jsonb({**o, "source_id": str(source_id), "erased_by": actor}), actor,
             bool(o["versions"])) for o in outcomes if not o.get("error")]
    with conn.cursor() as cur:
        for sql, params in ((_ERASURE_FAILED, failed), (_ERASURE_DONE, done)):
            if params:
                cur.executemany(sql, params)


def resume_deferred_deletions(conn: Conn, source_id: uuid.UUID) -> int:
    """Make the deletions a hold deferred due again at once; returns how many."""
    return len(conn.execute(
        "UPDATE deletion_tasks SET state = %s, next_attempt_at = NULL, last_error = NULL"
        " WHERE source_id = %s AND state = %s RETURNING id",
        (str(DeletionState.PENDING), source_id, str(DeletionState.DEFERRED))).fetchall())


@dataclass(frozen=True)
class TaskState:
    bucket: str
    key: str
    state: DeletionState


def lock_deletion_tasks(conn: Conn, source_id: uuid.UUID | str) -> list[TaskState]:
    """Lock the source's deletion tasks: waits for a purge deleting them right now (it holds
    them ``FOR UPDATE`` until its transaction ends), so what it deleted shows as done."""
    return [TaskState(r["bucket"], r["key"], DeletionState(r["state"])) for r in conn.execute(
        "SELECT bucket, key, state FROM deletion_tasks WHERE source_id = %s FOR UPDATE",
        (source_id,))]
