"""The ledger's front door: ``ledger.record_artifact``, ``ledger.claim_job``... keep working
wherever they are called, while each table group has its own module with its SQL.

  ``infra.jobs``              jobs (creation, claims, leases, sweeps, retries)
  ``infra.ledger_sources``    sources (the ingest's row, outcomes, a video's probe)
  ``infra.ledger_artifacts``  artifacts and detections
  ``infra.ledger_inbox``      inbox_objects and inbox_cursors (the inbox watcher)
  ``infra.ledger_audit``      audit_events (append-only)
  ``infra.ledger_reports``    read-only aggregations for status, metrics and reports
  ``infra.ledger_review``     reviews
  ``infra.ledger_deletions``  deletion_tasks (scheduling, the purge's claims and receipts)
  ``infra.ledger_holds``      legal_holds (read through the active_legal_holds view)
  ``infra.ledger_consent``    consents
  ``infra.ledger_rights``     erasure_requests, the erasure's steps, the access request's reads
"""

from __future__ import annotations

from infra.jobs import (  # re-exported: the jobs table is owned by infra/jobs.py
    JobContext,
    add_outbox_rows,
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
from infra.ledger_deletions import (  # re-exported
    KEEP_UNTIL_ERASED,
    schedule_deletion,
    schedule_inbox_deletion,
    schedule_output_deletion,
)
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

__all__ = ["KEEP_UNTIL_ERASED", "ArtifactRecord", "ChunkArtifact", "DetectionRange", "DetectionRow",
           "InboxPrefix", "InboxRef", "JobContext", "VideoJob", "add_outbox_rows", "audit",
           "chunk_artifacts", "claim_job", "count_cause_sql", "enqueue_assembly_if_last",
           "fail_job", "finish_job", "inbox_cursor", "inbox_outcome", "job_cancelled", "load_job",
           "load_video_job", "mark_inbox_released", "output_keys", "record_artifact",
           "record_detection_ranges", "record_inbox_object", "record_job_progress",
           "save_inbox_cursor", "schedule_deletion", "schedule_inbox_deletion",
           "schedule_output_deletion", "watch_backlog"]
