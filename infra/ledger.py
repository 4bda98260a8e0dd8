"""Ledger writes and reads shared by the producer and the workers.

Writes are idempotent (invariant 2): artifacts are upserted on (job, stage, model version) and a
job's detections for a stage and model are replaced as a whole, so a task that runs twice leaves
one artifact and one set of detections. Audit events are only ever inserted (invariant 3).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import Conn
from infra.jobs import (  # re-exported: the jobs table is owned by infra/jobs.py
    JobContext,
    claim_job,
    count_cause_sql,
    enqueue_assembly_if_last,
    fail_job,
    finish_job,
    job_cancelled,
    load_job,
    record_job_progress,
)
from infra.ledger_audit import audit  # re-exported
from infra.ledger_deletions import (  # re-exported
    KEEP_UNTIL_ERASED,
    schedule_deletion,
    schedule_inbox_deletion,
    schedule_output_deletion,
)
from schemas.enums import Stage


@dataclass(frozen=True)
class ArtifactRecord:
    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size_bytes: int
    content_type: str
    width: int | None
    height: int | None
    params: dict[str, Any]
    input_sha256: str
    timings: dict[str, float]


@dataclass(frozen=True)
class DetectionRow:
    frame_index: int
    cls: str
    score: float
    box: tuple[float, float, float, float]
    uncertain: bool = False  # within the policy's review band: listed by `veil review`


def record_artifact(
    conn: Conn,
    job: JobContext,
    stage: str,
    model_version: str,
    artifact: ArtifactRecord,
    detections: list[DetectionRow],
) -> None:
    """Upsert the artifact and replace the detections for (job, stage, model version)."""
    conn.execute(
        "INSERT INTO artifacts (job_id, source_id, stage, model_version, bucket, key, version_id,"
        " sha256, size_bytes, content_type, width, height, params, input_sha256, timings)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (job_id, stage, model_version) DO UPDATE SET bucket = EXCLUDED.bucket,"
        " key = EXCLUDED.key, version_id = EXCLUDED.version_id, sha256 = EXCLUDED.sha256,"
        " size_bytes = EXCLUDED.size_bytes, content_type = EXCLUDED.content_type,"
        " width = EXCLUDED.width, height = EXCLUDED.height, params = EXCLUDED.params,"
        " input_sha256 = EXCLUDED.input_sha256, timings = EXCLUDED.timings, updated_at = now()",
        (job.job_id, job.source_id, stage, model_version, artifact.bucket, artifact.key,
         artifact.version_id, artifact.sha256, artifact.size_bytes, artifact.content_type,
         artifact.width, artifact.height, Jsonb(artifact.params), artifact.input_sha256,
         Jsonb(artifact.timings)),
    )
    conn.execute(
        "DELETE FROM detections WHERE job_id = %s AND stage = %s AND model_version = %s",
        (job.job_id, stage, model_version),
    )
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO detections (job_id, stage, model_version, frame_index, class, score,"
            " x1, y1, x2, y2, uncertain) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [(job.job_id, stage, model_version, d.frame_index, d.cls, d.score, *d.box,
              d.uncertain) for d in detections],
        )


def output_keys(conn: Conn, source_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The redacted deliverable's key for each of ``source_ids`` that has one."""
    rows = conn.execute("SELECT source_id, key FROM artifacts WHERE source_id = ANY(%s)"
                        " AND stage = %s", (source_ids, str(Stage.REDACT))).fetchall()
    return {r["source_id"]: r["key"] for r in rows}


# --- video ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoJob:
    """The video side of a chunk or assemble job: its chunk plan and the source's probe."""

    chunk_index: int
    chunk: dict[str, Any] | None
    video: dict[str, Any]
    assembly_failed: str | None  # the assembly's error when a chunk of the source failed


def load_video_job(conn: Conn, job: JobContext) -> VideoJob:
    row = conn.execute(
        "SELECT j.chunk_index, j.chunk, s.video,"
        " (SELECT a.error FROM jobs a WHERE a.source_id = j.source_id AND a.kind = 'assemble'"
        "  AND a.state = 'failed') AS assembly_failed"
        " FROM jobs j JOIN sources s ON s.id = j.source_id WHERE j.id = %s", (job.job_id,),
    ).fetchone()
    if row is None or row["video"] is None:
        raise LookupError(f"job {job.job_id} is not a job of a probed video source")
    return VideoJob(row["chunk_index"], row["chunk"], row["video"], row["assembly_failed"])


@dataclass(frozen=True)
class DetectionRange:
    """Detections of one tracked region over frames ``first_frame``..``last_frame``."""

    first_frame: int
    last_frame: int
    cls: str
    score: float
    box: tuple[float, float, float, float]  # the union of its boxes over those frames


def record_detection_ranges(conn: Conn, job_id: uuid.UUID | str, stage: str,
                            model_version: str, ranges: list[DetectionRange]) -> None:
    """Add a video job's detections, one row per tracked region (after :func:`record_artifact`,
    which cleared the job's previous rows for this stage and model)."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO detections (job_id, stage, model_version, frame_index, frame_end, class,"
            " score, x1, y1, x2, y2) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            [(job_id, stage, model_version, r.first_frame, r.last_frame, r.cls, r.score, *r.box)
             for r in ranges],
        )


@dataclass(frozen=True)
class ChunkArtifact:
    job_id: uuid.UUID
    chunk_index: int
    state: str
    frame_start: int | None
    frame_count: int | None
    bucket: str | None
    key: str | None
    version_id: str | None
    sha256: str | None
    model_version: str | None
    params: dict[str, Any] | None


def chunk_artifacts(conn: Conn, source_id: uuid.UUID | str) -> list[ChunkArtifact]:
    """Every chunk job of a source in order, with its recorded chunk output (if any)."""
    rows = conn.execute(
        "SELECT j.id AS job_id, j.chunk_index, j.state, j.frame_start, j.frame_count, a.bucket,"
        " a.key, a.version_id, a.sha256, a.model_version, a.params FROM jobs j"
        " LEFT JOIN artifacts a ON a.job_id = j.id AND a.stage = 'chunk'"
        " WHERE j.source_id = %s AND j.kind = 'chunk' ORDER BY j.chunk_index, a.updated_at DESC",
        (source_id,)).fetchall()
    seen: dict[int, ChunkArtifact] = {}
    for row in rows:
        seen.setdefault(row["chunk_index"], ChunkArtifact(**row))
    return list(seen.values())


# --- the inbox watcher (issue 18) ----------------------------------------------------------

@dataclass(frozen=True)
class InboxRef:
    """Which inbox object version an input is: the ledger's key for exactly-once ingestion."""

    bucket: str
    key_sha256: str
    version_id: str | None
    size: int
    uploaded_at: datetime | None


def record_inbox_object(conn: Conn, inbox: InboxRef, *, source_id: uuid.UUID | None,
                        outcome: str, size_bytes: int, detail: str | None = None) -> bool:
    """One row per inbox object version handled; False when it was handled already (another
    delivery of the same version), in which case the caller's transaction changes nothing."""
    row = conn.execute(
        "INSERT INTO inbox_objects (bucket, key_sha256, version_id, source_id, outcome, detail,"
        " size_bytes, uploaded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING bucket",
        (inbox.bucket, inbox.key_sha256, inbox.version_id or "", source_id, outcome, detail,
         size_bytes, inbox.uploaded_at)).fetchone()
    return row is not None


def inbox_outcome(conn: Conn, bucket: str, key_sha256: str,
                  version_id: str | None) -> dict[str, Any] | None:
    """The recorded outcome of one inbox object version (None: never handled)."""
    return conn.execute(
        "SELECT source_id, outcome, detail, released_at FROM inbox_objects"
        " WHERE bucket = %s AND key_sha256 = %s AND version_id = %s",
        (bucket, key_sha256, version_id or "")).fetchone()


def mark_inbox_released(conn: Conn, bucket: str, key_sha256: str, version_id: str | None) -> None:
    conn.execute("UPDATE inbox_objects SET released_at = now() WHERE bucket = %s AND"
                 " key_sha256 = %s AND version_id = %s AND released_at IS NULL",
                 (bucket, key_sha256, version_id or ""))


def inbox_cursor(conn: Conn, bucket: str, prefix: str) -> str:
    row = conn.execute("SELECT position FROM inbox_cursors WHERE bucket = %s AND prefix = %s",
                       (bucket, prefix)).fetchone()
    return str(row["position"]) if row else ""


@dataclass(frozen=True)
class InboxPrefix:
    """One watched listing: a bucket and the key prefix inside it (a cursor's identity)."""

    bucket: str
    prefix: str


def save_inbox_cursor(conn: Conn, where: InboxPrefix, position: str, *,
                      backlog: int | None = None, paused: bool | None = None,
                      sweep_done: bool = False) -> None:
    """Move the listing cursor (durable across restarts) and the figures `veil status` shows."""
    conn.execute(
        "INSERT INTO inbox_cursors AS c (bucket, prefix, position, backlog, paused, sweeps)"
        " VALUES (%(b)s, %(p)s, %(pos)s, coalesce(%(backlog)s, 0), coalesce(%(paused)s, false),"
        " %(inc)s) ON CONFLICT (bucket, prefix) DO UPDATE SET position = %(pos)s,"
        " backlog = coalesce(%(backlog)s, c.backlog), paused = coalesce(%(paused)s, c.paused),"
        " sweeps = c.sweeps + %(inc)s, updated_at = now()",
        {"b": where.bucket, "p": where.prefix, "pos": position, "backlog": backlog,
         "paused": paused, "inc": int(sweep_done)})


def watch_backlog(conn: Conn) -> dict[str, Any]:
    """What the watchers last saw: objects waiting in the inbox, paused or not, and when."""
    row = conn.execute(
        "SELECT coalesce(sum(backlog), 0) AS backlog, coalesce(bool_or(paused), false) AS paused,"
        " max(updated_at) AS updated_at, coalesce(sum(sweeps), 0) AS sweeps FROM inbox_cursors"
    ).fetchone() or {}
    rejected = conn.execute("SELECT count(*) AS n FROM inbox_objects WHERE outcome = 'rejected'"
                            " AND released_at IS NULL").fetchone()
    return {"backlog": int(row.get("backlog", 0)), "paused": bool(row.get("paused")),
            "updated_at": row.get("updated_at"), "sweeps": int(row.get("sweeps", 0)),
            "rejected_kept": rejected["n"] if rejected else 0}


__all__ = ["InboxPrefix", "InboxRef", "JobContext", "audit", "claim_job", "count_cause_sql",
           "enqueue_assembly_if_last", "fail_job", "finish_job", "job_cancelled", "load_job",
           "record_job_progress",
           "KEEP_UNTIL_ERASED", "schedule_deletion", "schedule_inbox_deletion",
           "schedule_output_deletion"]
