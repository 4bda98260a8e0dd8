"""Read-only aggregations of the ledger for people: `veil status`, `veil metrics`, the record
of processing of `veil report`, and the demo's summary.

Owns no table: every statement here is a SELECT, run as the operator role (``veil_operator``:
status, metrics, report; the demo uses the settings' own connection). An active legal hold is
what the ``active_legal_holds`` view says (migration 0011), never a condition repeated here.
States, stages and actions are bound from ``schemas.enums``, so a renamed value cannot leave a
count silently at zero.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infra.db import Conn
from schemas.enums import AuditAction, DeletionState, DetectionClass, JobKind, JobState, Stage

# Deletion tasks still to be carried out (a deferred one waits for its legal hold instead).
_OPEN = [str(DeletionState.PENDING), str(DeletionState.FAILED)]
_LIVE = [str(JobState.QUEUED), str(JobState.RUNNING)]


def job_counts(conn: Conn) -> dict[str, int]:
    """How many jobs are in each state (a state with none is absent)."""
    return {r["state"]: r["n"] for r in conn.execute(
        "SELECT state, count(*) AS n FROM jobs GROUP BY state")}


def recent_failures(conn: Conn, limit: int = 50) -> list[dict[str, Any]]:
    """The newest failed jobs, with their reasons."""
    return conn.execute(
        "SELECT j.source_id, j.id AS job_id, j.error, j.finished_at FROM jobs j"
        " WHERE j.state = %s ORDER BY j.finished_at DESC NULLS LAST LIMIT %s",
        (str(JobState.FAILED), limit)).fetchall()


def source_count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) AS n FROM sources").fetchone()
    return int(row["n"]) if row else 0


def deletion_summary(conn: Conn) -> dict[str, Any]:
    """Open deletion tasks for `veil status`: due later, overdue (and since when), failing, the
    next due time, and how many a legal hold defers."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE due_at > now()) AS due,"
        " count(*) FILTER (WHERE due_at <= now()) AS overdue,"
        " min(due_at) FILTER (WHERE due_at <= now()) AS oldest_overdue,"
        " min(due_at) AS next_due, count(*) FILTER (WHERE state = %s) AS failed"
        " FROM deletion_tasks WHERE state = ANY(%s)",
        (str(DeletionState.FAILED), _OPEN)).fetchone() or {}
    deferred = conn.execute("SELECT count(*) AS n FROM deletion_tasks WHERE state = %s",
                            (str(DeletionState.DEFERRED),)).fetchone()
    return {**row, "deferred": deferred["n"] if deferred else 0}


def video_progress(conn: Conn, limit: int = 50) -> list[dict[str, Any]]:
    """Videos whose assembly has not finished, oldest first: chunks and frames, done and in
    all, and the assembly's state."""
    return conn.execute(
        "SELECT j.source_id, count(*) AS chunks,"
        " count(*) FILTER (WHERE j.state = %(done)s) AS chunks_done,"
        " coalesce(sum(j.frame_count), 0) AS frames,"
        " coalesce(sum(CASE WHEN j.state = %(done)s THEN j.frame_count"
        "  ELSE least(j.frames_done, j.frame_count) END), 0) AS frames_done,"
        " max(a.state) AS assembly"
        " FROM jobs j JOIN jobs a ON a.source_id = j.source_id AND a.kind = %(assemble)s"
        " WHERE j.kind = %(chunk)s AND a.state = ANY(%(live)s)"
        " GROUP BY j.source_id ORDER BY min(j.created_at) LIMIT %(limit)s",
        {"done": str(JobState.SUCCEEDED), "assemble": str(JobKind.ASSEMBLE),
         "chunk": str(JobKind.CHUNK), "live": _LIVE, "limit": limit}).fetchall()


_LINEAGE = {
    "jobs": "SELECT id, kind, chunk_index, state, attempts, attempt_causes, error, worker,"
            " enqueued_at, started_at, finished_at, lease_expires_at, frame_start, frame_count,"
            " frames_done FROM jobs WHERE source_id = %(id)s"
            " ORDER BY kind = %(assemble)s, chunk_index",
    "artifacts": "SELECT job_id, stage, model_version, bucket, key, version_id, sha256,"
                 " size_bytes, content_type, width, height, params, input_sha256, timings,"
                 " created_at FROM artifacts WHERE source_id = %(id)s ORDER BY id",
    "detections": "SELECT d.job_id, d.frame_index, d.frame_end, d.class, d.score, d.x1, d.y1,"
                  " d.x2, d.y2 FROM detections d JOIN jobs j ON j.id = d.job_id"
                  " WHERE j.source_id = %(id)s ORDER BY d.frame_index, d.score DESC",
    "deletions": "SELECT bucket, key, due_at, state, reason, attempts, last_error, done_at"
                 " FROM deletion_tasks WHERE source_id = %(id)s ORDER BY due_at",
    "legal_holds": "SELECT id, reason, set_by, set_at, released_by, released_at"
                   " FROM legal_holds WHERE source_id = %(id)s ORDER BY set_at",
}


def lineage(conn: Conn, source_id: uuid.UUID) -> dict[str, Any] | None:
    """One source and everything the ledger holds of it (None: no such source): its jobs,
    artifacts, detections, deletion tasks and legal holds, released ones included."""
    source = conn.execute(
        "SELECT id, sha256, kind, media_format, original_name, size_bytes, raw_bucket, raw_key,"
        " raw_version_id, policy_name, policy_version, camera, captured_at, origin, created_at"
        " FROM sources WHERE id = %s", (source_id,)).fetchone()
    if source is None:
        return None
    params = {"id": source_id, "assemble": str(JobKind.ASSEMBLE)}
    return {"source": source, **{name: conn.execute(sql, params).fetchall()  # type: ignore[call-overload]
                                 for name, sql in _LINEAGE.items()}}


_DELETION_GAUGES = """
SELECT count(*) FILTER (WHERE state = ANY(%(open)s) AND due_at <= now()) AS overdue,
       count(*) FILTER (WHERE state = %(pending)s) AS pending,
       count(*) FILTER (WHERE state = %(deferred)s) AS deferred,
       count(*) FILTER (WHERE state = %(failed)s) AS failed,
       count(*) FILTER (WHERE state = %(done)s) AS done,
       coalesce(extract(epoch FROM now() - min(due_at)
                FILTER (WHERE state = ANY(%(open)s) AND due_at <= now())), 0)
           AS oldest_overdue_s
FROM deletion_tasks
"""


def deletion_gauges(conn: Conn) -> dict[str, Any]:
    """Deletion tasks by state, how many are overdue and the oldest overdue's age (metrics)."""
    row = conn.execute(_DELETION_GAUGES, {
        "open": _OPEN, **{str(s): str(s) for s in DeletionState}}).fetchone()
    return dict(row) if row else {}


def active_hold_count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) AS n FROM active_legal_holds").fetchone()
    return int(row["n"]) if row else 0


def confident_faces(conn: Conn, source_ids: list[str], min_score: float) -> dict[str, int]:
    """Faces found at ``min_score`` or above, per source (the demo's summary; the boxes below
    it were redacted all the same)."""
    rows = conn.execute(
        "SELECT a.source_id::text AS sid, count(d.id) FILTER (WHERE d.score >= %s) AS n"
        " FROM artifacts a"
        " LEFT JOIN detections d ON d.job_id = a.job_id AND d.class = %s"
        " WHERE a.source_id::text = ANY(%s) GROUP BY a.source_id",
        (min_score, str(DetectionClass.FACE), source_ids)).fetchall()
    return {r["sid"]: r["n"] for r in rows}


# --- `veil report`: the record of processing for a period ----------------------------------------

@dataclass(frozen=True)
class Period:
    """The report's period: from ``start`` (included) to ``end`` (excluded)."""

    start: datetime
    end: datetime

    def params(self) -> dict[str, Any]:
        """The period and every enum value the report's statements name, as named parameters
        (psycopg ignores the names a statement does not use)."""
        return {"from": self.start, "to": self.end, "stages": [str(s) for s in Stage],
                "job_failed": str(JobState.FAILED), "deferred": str(DeletionState.DEFERRED),
                "done": str(DeletionState.DONE), "raw_read": str(AuditAction.RAW_READ),
                "raw_reveal": str(AuditAction.RAW_REVEAL),
                "dsar_export": str(AuditAction.DSAR_EXPORT)}


_POLICIES_USED = """
SELECT policy_name, policy_version, coalesce(legal_basis, policy->'legal_basis'->>'art6',
       'not declared') AS legal_basis, count(*) AS sources
FROM sources WHERE created_at >= %(from)s AND created_at < %(to)s
GROUP BY 1, 2, 3 ORDER BY 1, 2"""

_RECORDINGS = """
SELECT CASE WHEN erased_at IS NOT NULL THEN '(erased)' ELSE coalesce(camera, '(none)') END
       AS camera, policy_name, kind, count(*) AS sources, coalesce(sum(duration_s), 0) AS seconds
FROM sources WHERE created_at >= %(from)s AND created_at < %(to)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""

_GUARD = """
SELECT a.stage, coalesce(a.params->'guard'->>'action', 'none') AS action, count(*) AS outputs,
       coalesce(sum((a.params->'guard'->>'weak')::int), 0) AS weak,
       coalesce(sum((a.params->'guard'->>'miss')::int), 0) AS miss
FROM artifacts a WHERE a.stage = ANY(%(stages)s)
  AND a.created_at >= %(from)s AND a.created_at < %(to)s AND a.params ? 'guard'
GROUP BY 1, 2 ORDER BY 1, 2"""

_GUARD_FAILED = """
SELECT count(*) AS n FROM jobs WHERE state = %(job_failed)s AND error ILIKE '%%guard%%'
  AND finished_at >= %(from)s AND finished_at < %(to)s"""

_CONSENTS = """
SELECT count(*) FILTER (WHERE given_at >= %(from)s AND given_at < %(to)s) AS given,
       count(*) FILTER (WHERE withdrawn_at >= %(from)s AND withdrawn_at < %(to)s) AS withdrawn,
       count(*) FILTER (WHERE withdrawn_at IS NULL AND given_at < %(to)s
                        AND (expires_at IS NULL OR expires_at > %(to)s)) AS active_at_end,
       count(*) FILTER (WHERE wording_version IS NULL) AS without_wording_version
FROM consents"""

# Holds in force at some time in the period: set before its end, and still active (the view's
# rule) or released after its start.
_HOLDS = """
SELECT h.id, h.source_id, h.set_at, h.set_by, h.reason, h.released_at, h.released_by,
       h.forbids_reveal,
       (SELECT count(*) FROM deletion_tasks d WHERE d.source_id = h.source_id
         AND d.state = %(deferred)s) AS deletions_deferred
FROM legal_holds h LEFT JOIN active_legal_holds a ON a.id = h.id
WHERE h.set_at < %(to)s AND (a.id IS NOT NULL OR h.released_at >= %(from)s)
ORDER BY h.set_at"""

_RAW_ACCESS = """
SELECT split_part(actor, '@', 1) AS actor, action, count(*) AS events,
       count(DISTINCT source_id) AS sources
FROM audit_events WHERE action IN (%(raw_read)s, %(raw_reveal)s)
  AND at >= %(from)s AND at < %(to)s GROUP BY 1, 2 ORDER BY 1, 2"""

_REVEALS = """
SELECT at, actor, source_id, detail->'regions' AS regions FROM audit_events
WHERE action = %(raw_reveal)s AND at >= %(from)s AND at < %(to)s ORDER BY at"""

_DELETIONS_DUE = """
SELECT bucket, reason, state, due_at, done_at, least(coalesce(done_at, now()), now()) - due_at
       AS delay
FROM deletion_tasks WHERE (due_at >= %(from)s OR state <> %(done)s)
  AND due_at < least(%(to)s, now()) AND due_at < %(keep)s"""

_RESPONSES = """
SELECT at, actor, source_id, detail->>'received_at' AS received_at,
       detail->>'reason' AS reason, detail->>'ref' AS ref FROM audit_events
WHERE action = %(action)s AND at >= %(from)s AND at < %(to)s ORDER BY at"""

# The events of one access request (one export) share their transaction time.
_ACCESS_REQUESTS = """
SELECT at, actor, camera, received_at, count(*) AS sources, bool_or(revealed) AS revealed
FROM (SELECT at, actor, detail->>'camera' AS camera, detail->>'received_at' AS received_at,
             jsonb_array_length(coalesce(detail->'revealed_regions', '[]'::jsonb)) > 0
                 AS revealed
      FROM audit_events
      WHERE action = %(dsar_export)s AND at >= %(from)s AND at < %(to)s) e
GROUP BY at, actor, camera, received_at ORDER BY at"""


def _rows(conn: Conn, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sql, params).fetchall()]  # type: ignore[call-overload]


def _one(conn: Conn, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(sql, params).fetchone()  # type: ignore[call-overload]
    return dict(row) if row else {}


def policies_used(conn: Conn, period: Period) -> list[dict[str, Any]]:
    """Sources ingested in the period by policy, version and legal basis."""
    return _rows(conn, _POLICIES_USED, period.params())


def recordings(conn: Conn, period: Period) -> list[dict[str, Any]]:
    """Sources ingested in the period by camera (erased ones apart), policy and kind."""
    return _rows(conn, _RECORDINGS, period.params())


def guard_outcomes(conn: Conn, period: Period) -> list[dict[str, Any]]:
    """Outputs written in the period by stage and what their guard did."""
    return _rows(conn, _GUARD, period.params())


def guard_failures(conn: Conn, period: Period) -> int:
    """Jobs that failed in the period because their guard refused the output."""
    return int(_one(conn, _GUARD_FAILED, period.params())["n"])


def consent_counts(conn: Conn, period: Period) -> dict[str, Any]:
    """Consents given and withdrawn in the period, active at its end, without a wording."""
    return _one(conn, _CONSENTS, period.params())


def holds_in_force(conn: Conn, period: Period) -> list[dict[str, Any]]:
    """Legal holds in force at some time in the period, with the deletions each defers."""
    return _rows(conn, _HOLDS, period.params())


def raw_access(conn: Conn, period: Period) -> list[dict[str, Any]]:
    """Reads and reveals of raw originals in the period, by actor (the role, not the host)."""
    return _rows(conn, _RAW_ACCESS, period.params())


def reveals(conn: Conn, period: Period) -> list[dict[str, Any]]:
    """Every reveal of unredacted regions in the period."""
    return _rows(conn, _REVEALS, period.params())


def deletions_due(conn: Conn, period: Period, keep_until: datetime) -> list[dict[str, Any]]:
    """Deletion tasks due in the period, and earlier ones still not done, with their delay;
    objects kept until erased (due ``keep_until``) are left out."""
    return _rows(conn, _DELETIONS_DUE, {**period.params(), "keep": keep_until})


def responses(conn: Conn, action: AuditAction, period: Period) -> list[dict[str, Any]]:
    """The ``action`` events of the period, with the request's ``received_at`` if given."""
    return _rows(conn, _RESPONSES, {**period.params(), "action": str(action)})


def access_requests(conn: Conn, period: Period) -> list[dict[str, Any]]:
    """Access requests answered in the period: one row per export, with its sources."""
    return _rows(conn, _ACCESS_REQUESTS, period.params())
