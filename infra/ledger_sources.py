"""Sources: one row per original handed to Veil, written by the ingest in the source's own
transaction, and what the producer and the workers read back of it.

Owner of ``sources`` for the ingest side. The producer role (``veil_producer``: `veil ingest`,
`veil watch`, `veil redact`) runs the writes and the outcome reads; the worker role
(``veil_worker``) runs :func:`load_video_job`. The retention role's updates (erasure, names
cleared with the raw original) belong to the erasure and the purge.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import Conn
from infra.jobs import JobContext
from schemas.enums import JobKind, JobState


@dataclass(frozen=True)
class NewSource:
    """A source row as the ingest writes it: the original, where its raw copy lies, the policy
    it was taken under (its purpose and legal basis) and, for an inbox upload, where it was."""

    id: uuid.UUID
    sha256: str
    kind: str
    media_format: str
    original_name: str
    size_bytes: int
    raw_bucket: str
    raw_key: str
    raw_version_id: str | None
    policy_name: str
    policy_version: int
    policy: dict[str, Any]
    camera: str | None
    captured_at: datetime | None
    origin: str
    purpose: str | None
    legal_basis: str | None
    consent_ref: str | None
    duration_s: float | None
    inbox_bucket: str | None
    inbox_key: str | None
    inbox_version_id: str | None


_COLUMNS = [f.name for f in fields(NewSource)]
_INSERT_SOURCE = (
    f"INSERT INTO sources ({', '.join(_COLUMNS)}) VALUES ("
    + ", ".join(f"%({c})s" for c in _COLUMNS)
    + ") ON CONFLICT (sha256) DO NOTHING RETURNING id")


def insert_source(conn: Conn, source: NewSource) -> bool:
    """Write the source row; False when its bytes are already a source (a duplicate)."""
    # getattr, not dataclasses.asdict: asdict deep-copies the policy (about 0.7 ms a source,
    # an eighth of the ingest's own CPU on faces-dev) only for Jsonb to serialise it.
    values = {c: getattr(source, c) for c in _COLUMNS}
    values["policy"] = Jsonb(source.policy)
    return conn.execute(_INSERT_SOURCE, values).fetchone() is not None


def known_digests(conn: Conn, digests: Sequence[str]) -> set[str]:
    """The ones of ``digests`` (sha256 of originals) that some source already holds."""
    return {r["sha256"] for r in conn.execute(
        "SELECT sha256 FROM sources WHERE sha256 = ANY(%s)", (list(digests),))}


def erased_at(conn: Conn, source_id: uuid.UUID) -> datetime | None:
    """When the source was erased (None: not erased, or no such source)."""
    row = conn.execute("SELECT erased_at FROM sources WHERE id = %s", (source_id,)).fetchone()
    return row["erased_at"] if row else None


def source_outcomes(conn: Conn,
                    source_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str | None]]:
    """State and error of the job that carries each source's outcome: a video's assemble job
    (which a failed chunk fails at once), else the source's first job."""
    rows = conn.execute(
        "SELECT DISTINCT ON (source_id) source_id, state, error FROM jobs"
        " WHERE source_id = ANY(%s) ORDER BY source_id, (kind = %s) DESC, chunk_index",
        (list(source_ids), str(JobKind.ASSEMBLE))).fetchall()
    return {r["source_id"]: (r["state"], r["error"]) for r in rows}


def record_video_probe(conn: Conn, source_id: uuid.UUID, video: dict[str, Any]) -> None:
    """The probe of a video source (streams, frame rate, frames), read by its chunk jobs."""
    conn.execute("UPDATE sources SET video = %s WHERE id = %s", (Jsonb(video), source_id))


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
        " (SELECT a.error FROM jobs a WHERE a.source_id = j.source_id AND a.kind = %s"
        "  AND a.state = %s) AS assembly_failed"
        " FROM jobs j JOIN sources s ON s.id = j.source_id WHERE j.id = %s",
        (str(JobKind.ASSEMBLE), str(JobState.FAILED), job.job_id),
    ).fetchone()
    if row is None or row["video"] is None:
        raise LookupError(f"job {job.job_id} is not a job of a probed video source")
    return VideoJob(row["chunk_index"], row["chunk"], row["video"], row["assembly_failed"])
