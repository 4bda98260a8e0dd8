"""Enumerations shared by the producer, the workers and the database (values are stored)."""

from __future__ import annotations

from enum import StrEnum


class SourceKind(StrEnum):
    IMAGE = "image"
    VIDEO = "video"


class JobKind(StrEnum):
    IMAGE = "image"
    CHUNK = "chunk"
    ASSEMBLE = "assemble"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Stage(StrEnum):
    REDACT = "redact"  # the deliverable in `redacted` (an image, or an assembled video)
    CHUNK = "chunk"  # a redacted video chunk in `work`, joined by assembly


class DeletionState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    DEFERRED = "deferred"
    FAILED = "failed"


class AuditAction(StrEnum):
    INGEST = "ingest"
    RAW_READ = "raw_read"
    OUTPUT_WRITE = "output_write"
    EXPORT = "export"
    ERASE = "erase"
    PURGE = "purge"
    HOLD_SET = "hold_set"
    HOLD_RELEASE = "hold_release"
    JOB_FAILED = "job_failed"
    PURGE_DEFERRED = "purge_deferred"
    PURGE_FAILED = "purge_failed"
    DSAR_EXPORT = "dsar_export"
    DSAR_PREVIEW = "dsar_preview"
    RAW_REVEAL = "raw_reveal"  # `veil dsar --reveal`: regions shown unredacted to an operator
    CONSENT_ADD = "consent_add"
    CONSENT_WITHDRAW = "consent_withdraw"
    JOB_RETRY = "job_retry"
    ORPHAN_FOUND = "orphan_found"


class DetectionClass(StrEnum):
    FACE = "face"
    PLATE = "plate"
    TEXT = "text"
    CUSTOM = "custom"
