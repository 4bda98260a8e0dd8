"""The ledger's front door: ``ledger.record_artifact``, ``ledger.claim_job``... keep working
wherever they are called, while each table group has its own module with its SQL.

  ``infra.jobs``              jobs (creation, claims, leases, sweeps, retries)
  ``infra.ledger_sources``    sources (the ingest's row, outcomes, a video's probe)
  ``infra.ledger_artifacts``  artifacts and detections
  ``infra.ledger_inbox``      inbox_objects and inbox_cursors (the inbox watcher)
  ``infra.ledger_audit``      audit_events (append-only)
  ``infra.ledger_reports``    read-only aggregations for status, metrics and reports
  ``infra.ledger_review``     reviews

What is still written here: the deletion tasks an object's record schedules (``deletion_tasks``,
run as the producer and the worker roles).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from infra.db import Conn
from infra.jobs import (  # re-exported: the jobs table is owned by infra/jobs.py
    JobContext,
    _outbox_rows,
    claim_job,
    count_cause_sql,
    enqueue_assembly_if_last,
    fail_job,
    finish_job,
    job_cancelled,
    load_job,
    record_job_progress,
)
from infra.ledger_artifacts import (  # re-exported
    ArtifactRecord,
    ChunkArtifact,
    DetectionRange,
    DetectionRow,
    chunk_artifacts,
    output_keys,
    record_artifact,
    record_detection_ranges,
)
from infra.ledger_audit import audit  # re-exported
from infra.ledger_inbox import (  # re-exported
    InboxPrefix,
    InboxRef,
    inbox_cursor,
    inbox_outcome,
    mark_inbox_released,
    record_inbox_object,
    save_inbox_cursor,
    watch_backlog,
)
from infra.ledger_sources import VideoJob, load_video_job  # re-exported

# The outbox rows of new jobs, (job id, job kind) each, sent after commit: written by the one
# writer of job tasks' outbox rows, which the sweep and the retry use too.
add_outbox_rows = _outbox_rows

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


__all__ = ["ArtifactRecord", "ChunkArtifact", "DetectionRange", "DetectionRow", "InboxPrefix",
           "InboxRef", "JobContext", "VideoJob", "add_outbox_rows", "audit", "chunk_artifacts",
           "claim_job", "count_cause_sql", "enqueue_assembly_if_last", "fail_job", "finish_job",
           "inbox_cursor", "inbox_outcome", "job_cancelled", "load_job", "load_video_job",
           "mark_inbox_released", "output_keys", "record_artifact", "record_detection_ranges",
           "record_inbox_object", "record_job_progress", "save_inbox_cursor", "watch_backlog"]
