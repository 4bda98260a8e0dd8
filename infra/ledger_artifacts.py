"""Artifacts and detections: what a job wrote, and what it found on the way.

Owner of ``artifacts`` and ``detections``. The worker role (``veil_worker``: `veil worker`) runs
the writes; the producer (`veil ingest --wait`) and the operator (`veil export`) run the reads;
the retention role reads and deletes detections in ``workers.retention``, not here.

Writes are idempotent (invariant 2): an artifact is upserted on (job, stage, model version) and
a job's detections for a stage and model are replaced as a whole, so a task that runs twice
leaves one artifact and one set of detections.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import Conn
from infra.jobs import JobContext
from schemas.enums import DeletionState, JobKind, Stage


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
    # COPY, not one INSERT a row: a crowd photo has dozens of boxes and a video chunk thousands
    # (faces-dev: 41 an image); same INSERT privilege, one statement.
    with conn.cursor() as cur, cur.copy(
            "COPY detections (job_id, stage, model_version, frame_index, class, score,"
            " x1, y1, x2, y2, uncertain) FROM STDIN") as copy:
        for d in detections:
            copy.write_row((job.job_id, stage, model_version, d.frame_index, d.cls, d.score,
                            *d.box, d.uncertain))


def output_keys(conn: Conn, source_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The redacted deliverable's key for each of ``source_ids`` that has one."""
    rows = conn.execute("SELECT source_id, key FROM artifacts WHERE source_id = ANY(%s)"
                        " AND stage = %s", (source_ids, str(Stage.REDACT))).fetchall()
    return {r["source_id"]: r["key"] for r in rows}


_DELIVERABLES = (
    "SELECT s.id, s.original_name, s.erased_at, a.bucket, a.key, a.version_id,"
    " coalesce(d.state = %s, false) AS purged FROM sources s"
    " LEFT JOIN artifacts a ON a.source_id = s.id AND a.stage = %s"
    " LEFT JOIN deletion_tasks d ON d.bucket = a.bucket AND d.key = a.key")


def deliverables(conn: Conn, source_ids: Sequence[uuid.UUID] | None) -> list[dict[str, Any]]:
    """Each source (of ``source_ids``, or every one) with its redacted output, if any, and
    whether that output was purged or the source erased: what `veil export` reads."""
    params: list[object] = [str(DeletionState.DONE), str(Stage.REDACT)]
    where = ""
    if source_ids is not None:
        where = " WHERE s.id = ANY(%s)"
        params.append(list(source_ids))
    return conn.execute(_DELIVERABLES + where + " ORDER BY s.created_at, s.id",
                        params).fetchall()


# --- video ------------------------------------------------------------------------------------

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
        " LEFT JOIN artifacts a ON a.job_id = j.id AND a.stage = %s"
        " WHERE j.source_id = %s AND j.kind = %s ORDER BY j.chunk_index, a.updated_at DESC",
        (str(Stage.CHUNK), source_id, str(JobKind.CHUNK))).fetchall()
    seen: dict[int, ChunkArtifact] = {}
    for row in rows:
        seen.setdefault(row["chunk_index"], ChunkArtifact(**row))
    return list(seen.values())
