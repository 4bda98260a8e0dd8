"""Data-subject rights: erasure requests, the erasure's own statements, and what an access
request (`veil dsar`) reads of the ledger.

Owner of ``erasure_requests``: `veil erase` records a request as ``veil_operator``
(:func:`record_erasure_request`, :func:`erasure_receipts`); the retention worker
(``veil_retention``) reads the pending request and writes its receipts.

The erasure runs as ``veil_retention`` in one transaction per source (``workers.retention.erase``).
Its statements on ``deletion_tasks`` (locking a source's tasks, a receipt per deleted object)
are ``infra.ledger_deletions``'s, the table's owner; here it locks the source row, drops the
source's detections and review notes and turns the source row into a tombstone. 0008_roles.sql
grants ``veil_retention`` exactly these rights.

The access request's reads run as ``veil_operator`` (sources, jobs, artifacts, detections,
deletion tasks; never the keyring). Everything here is bound to ``schemas.enums`` where an enum
names the value; the erasure request's own states (``pending``, ``done``) have none.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, cast

from psycopg.types.json import Jsonb

from infra.db import Conn
from schemas.chunks import ChunkPlan
from schemas.enums import AuditAction, DeletionState, JobKind, Stage

_REQUEST_PENDING, _REQUEST_DONE = "pending", "done"


# --- the source a request is about (holds and erasure, veil_retention) --------------------------

@dataclass(frozen=True)
class LockedSource:
    id: uuid.UUID
    raw_bucket: str
    raw_key: str
    erased_at: datetime | None


def lock_source(conn: Conn, source_id: uuid.UUID | str) -> LockedSource | None:
    """Lock the source row (holds and erasures of one source run one at a time); None: no such
    source."""
    row = conn.execute(
        "SELECT id, raw_bucket, raw_key, erased_at FROM sources WHERE id = %s FOR UPDATE",
        (source_id,)).fetchone()
    return LockedSource(**row) if row else None


def recorded_objects(conn: Conn, source_id: uuid.UUID | str) -> set[tuple[str, str]]:
    """Every (bucket, key) the ledger names for a source: its raw original, its inbox upload,
    its recorded outputs and its deletion tasks."""
    return {(r["bucket"], r["key"]) for r in conn.execute(
        "SELECT raw_bucket AS bucket, raw_key AS key FROM sources WHERE id = %(id)s"
        " UNION SELECT inbox_bucket, inbox_key FROM sources"
        " WHERE id = %(id)s AND inbox_key IS NOT NULL"
        " UNION SELECT bucket, key FROM artifacts WHERE source_id = %(id)s"
        " UNION SELECT bucket, key FROM deletion_tasks WHERE source_id = %(id)s",
        {"id": source_id})}


# --- erasure requests ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ErasureRequest:
    """What `veil erase` recorded: the sources, why, who asked and when the subject asked."""

    id: uuid.UUID
    source_ids: list[uuid.UUID]
    reason: str
    requested_by: str
    received_at: datetime | None


def record_erasure_request(conn: Conn, request: ErasureRequest) -> None:
    conn.execute("INSERT INTO erasure_requests (id, source_ids, reason, requested_by,"
                 " received_at) VALUES (%s, %s, %s, %s, %s)",
                 (request.id, request.source_ids, request.reason, request.requested_by,
                  request.received_at))


def pending_erasure_request(conn: Conn, request_id: uuid.UUID) -> ErasureRequest | None:
    """The request if it is on record and not carried out yet (None: an erase task naming it
    does nothing)."""
    row = conn.execute(
        "SELECT id, source_ids, reason, requested_by, received_at FROM erasure_requests"
        " WHERE id = %s AND state = %s", (request_id, _REQUEST_PENDING)).fetchone()
    return ErasureRequest(**row) if row else None


def finish_erasure_request(conn: Conn, request_id: uuid.UUID,
                           receipts: list[dict[str, Any]]) -> None:
    conn.execute("UPDATE erasure_requests SET state = %s, done_at = now(), receipts = %s"
                 " WHERE id = %s", (_REQUEST_DONE, Jsonb(receipts), request_id))


def erasure_receipts(conn: Conn, request_id: uuid.UUID) -> list[dict[str, Any]] | None:
    """The receipts once the request is carried out; None while it is not (or unknown)."""
    row = conn.execute("SELECT state, receipts FROM erasure_requests WHERE id = %s",
                       (request_id,)).fetchone()
    return list(row["receipts"]) if row is not None and row["state"] == _REQUEST_DONE else None


# --- the erasure's writes (veil_retention, in the source's transaction) --------------------------

def drop_derived_rows(conn: Conn, source_id: uuid.UUID) -> None:
    """The source's detections (boxes of people) and review notes (free text about the
    footage) go with its personal data."""
    conn.execute("DELETE FROM detections WHERE job_id IN"
                 " (SELECT id FROM jobs WHERE source_id = %s)", (source_id,))
    conn.execute("DELETE FROM reviews WHERE source_id = %s", (source_id,))


def tombstone_source(conn: Conn, source_id: uuid.UUID, name: str) -> datetime:
    """Keep only the source's id and sha256 (so the same bytes are refused on re-ingest): the
    file name becomes ``name``, camera and capture time go. Returns when it was (first) erased."""
    return cast(datetime, conn.execute(
        "UPDATE sources SET erased_at = coalesce(erased_at, now()), original_name = %s,"
        " camera = NULL, captured_at = NULL WHERE id = %s RETURNING erased_at",
        (name, source_id)).fetchone()["erased_at"])  # type: ignore[index]


class ExportRecord(TypedDict):
    at: datetime
    actor: str
    action: str


def exports_on_record(conn: Conn, source_id: uuid.UUID) -> list[ExportRecord]:
    """Copies handed out before the erasure (exports, access requests), oldest first."""
    return cast(list[ExportRecord], conn.execute(
        "SELECT at, actor, action FROM audit_events WHERE source_id = %s AND action = ANY(%s)"
        " ORDER BY at", (source_id, [str(AuditAction.EXPORT), str(AuditAction.DSAR_EXPORT)])
    ).fetchall())


# --- access requests (veil_operator) ------------------------------------------------------------

class DsarSource(TypedDict):
    """A source row as an access request reads it."""

    id: uuid.UUID
    kind: str
    media_format: str
    camera: str
    captured_at: datetime
    duration_s: float | None
    policy_name: str
    policy_version: int
    policy: dict[str, Any]
    created_at: datetime
    raw_bucket: str
    raw_key: str
    raw_version_id: str | None
    sha256: str
    video: dict[str, Any] | None
    purpose: str | None
    legal_basis: str | None
    consent_ref: str | None


_SOURCES_SQL = """
SELECT id, kind, media_format, camera, captured_at, duration_s, policy_name, policy_version,
       policy, created_at, raw_bucket, raw_key, raw_version_id, sha256, video, purpose,
       legal_basis, consent_ref
FROM sources
WHERE camera = %(camera)s AND erased_at IS NULL AND captured_at IS NOT NULL
  AND captured_at <= %(to)s
  AND captured_at + make_interval(secs => coalesce(duration_s, 0)) >= %(from)s
ORDER BY captured_at, id
"""


def sources_in_range(conn: Conn, camera: str, start: datetime, end: datetime) -> list[DsarSource]:
    """The camera's sources whose capture overlaps the range (a video from ``captured_at`` for
    ``duration_s``; an image at one instant), erased ones excluded, in capture order."""
    return cast(list[DsarSource], conn.execute(
        _SOURCES_SQL, {"camera": camera, "from": start, "to": end}).fetchall())


class JobRecord(TypedDict):
    id: uuid.UUID
    kind: str
    chunk_index: int
    state: str
    error: str | None
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None


class RedactedOutput(TypedDict):
    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size_bytes: int
    content_type: str
    width: int | None
    height: int | None
    model_version: str
    params: dict[str, Any]
    stage: str
    created_at: datetime


class DeletionRecord(TypedDict):
    bucket: str
    key: str
    due_at: datetime
    state: str
    done_at: datetime | None


@dataclass(frozen=True)
class SourceLineage:
    """What an access request tells of one source: its jobs, its newest redacted output (None:
    none yet), detection counts by class and its deletion tasks (earliest due first)."""

    jobs: list[JobRecord]
    output: RedactedOutput | None
    detections: dict[str, int]
    deletions: list[DeletionRecord]


def source_lineage(conn: Conn, source_id: uuid.UUID, redacted_bucket: str) -> SourceLineage:
    jobs = conn.execute(
        "SELECT id, kind, chunk_index, state, error, attempts, started_at, finished_at"
        " FROM jobs WHERE source_id = %s ORDER BY kind, chunk_index", (source_id,)).fetchall()
    output = conn.execute(
        "SELECT bucket, key, version_id, sha256, size_bytes, content_type, width, height,"
        " model_version, params, stage, created_at FROM artifacts"
        " WHERE source_id = %s AND bucket = %s ORDER BY updated_at DESC, id DESC LIMIT 1",
        (source_id, redacted_bucket)).fetchone()
    detections = {r["class"]: r["n"] for r in conn.execute(
        "SELECT d.class, count(*) AS n FROM detections d JOIN jobs j ON j.id = d.job_id"
        " WHERE j.source_id = %s GROUP BY d.class ORDER BY d.class", (source_id,))}
    deletions = conn.execute(
        "SELECT bucket, key, due_at, state, done_at FROM deletion_tasks WHERE source_id = %s"
        " ORDER BY due_at", (source_id,)).fetchall()
    return SourceLineage(cast(list[JobRecord], jobs), cast(RedactedOutput | None, output),
                         detections, cast(list[DeletionRecord], deletions))


@dataclass(frozen=True)
class Region:
    """A recorded region: one detection row of a published output (a face, plate or text in an
    image; a tracked region over a video's frames, with the union of its boxes). Its row id is
    the region id an operator names with `veil dsar --reveal`."""

    id: int
    source_id: uuid.UUID
    cls: str
    score: float
    first_frame: int
    last_frame: int
    box: tuple[float, float, float, float]

    def covers(self, frame: int) -> bool:
        return self.first_frame <= frame <= self.last_frame

    def to_json(self) -> dict[str, Any]:
        return {"region_id": self.id, "source_id": str(self.source_id), "class": self.cls,
                "score": round(self.score, 3), "frames": [self.first_frame, self.last_frame],
                "box": [round(v, 1) for v in self.box]}


def recorded_regions(conn: Conn,
                     source_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Region]]:
    """Every recorded region of the sources (the published output's detections), in frame
    order; a source with none maps to an empty list."""
    out: dict[uuid.UUID, list[Region]] = {s: [] for s in source_ids}
    for r in conn.execute(
            "SELECT d.id, j.source_id, d.class, d.score, d.frame_index,"
            " coalesce(d.frame_end, d.frame_index) AS frame_end, d.x1, d.y1, d.x2, d.y2"
            " FROM detections d JOIN jobs j ON j.id = d.job_id"
            " WHERE j.source_id = ANY(%s) AND d.stage = ANY(%s)"
            " ORDER BY j.source_id, d.frame_index, d.id",
            (list(source_ids), [str(Stage.REDACT), str(Stage.CHUNK)])):
        out[r["source_id"]].append(Region(r["id"], r["source_id"], r["class"], r["score"],
                                          r["frame_index"], r["frame_end"],
                                          (r["x1"], r["y1"], r["x2"], r["y2"])))
    return out


def raw_purged_at(conn: Conn, bucket: str, key: str) -> datetime | None:
    """When the raw original's deletion was done (None: it is still stored)."""
    row = conn.execute("SELECT done_at FROM deletion_tasks WHERE bucket = %s AND key = %s"
                       " AND state = %s", (bucket, key, str(DeletionState.DONE))).fetchone()
    return row["done_at"] if row else None


def chunk_plans(conn: Conn, source_id: uuid.UUID) -> list[ChunkPlan]:
    """A video's chunk plans in order (a reveal decodes the original as the workers did)."""
    return [ChunkPlan.from_json(r["chunk"]) for r in conn.execute(
        "SELECT chunk FROM jobs WHERE source_id = %s AND kind = %s ORDER BY chunk_index",
        (source_id, str(JobKind.CHUNK)))]
