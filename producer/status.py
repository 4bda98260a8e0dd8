"""`veil status`: what the ledger says, overall or for one source."""

from __future__ import annotations

import uuid
from typing import Any

from infra import db, jobs, ledger
from infra.reconcile import unrecorded_objects
from infra.settings import Settings
from schemas.enums import JobState


def overview(settings: Settings) -> dict[str, Any]:
    with db.connect(settings) as conn:
        states = {r["state"]: r["n"] for r in conn.execute(
            "SELECT state, count(*) AS n FROM jobs GROUP BY state")}
        failures = conn.execute(
            "SELECT j.source_id, j.id AS job_id, j.error, j.finished_at FROM jobs j"
            " WHERE j.state = 'failed' ORDER BY j.finished_at DESC NULLS LAST LIMIT 50"
        ).fetchall()
        deletions = conn.execute(
            "SELECT count(*) FILTER (WHERE due_at > now()) AS due,"
            " count(*) FILTER (WHERE due_at <= now()) AS overdue,"
            " min(due_at) FILTER (WHERE due_at <= now()) AS oldest_overdue,"
            " min(due_at) AS next_due, count(*) FILTER (WHERE state = 'failed') AS failed"
            " FROM deletion_tasks WHERE state IN ('pending', 'failed')"
        ).fetchone() or {}
        deferred = conn.execute(
            "SELECT count(*) AS n FROM deletion_tasks WHERE state = 'deferred'").fetchone()
        sources = conn.execute("SELECT count(*) AS n FROM sources").fetchone()
        videos = video_progress(conn)
        stalled = jobs.stalled_jobs(conn, settings.limits.requeue_after_s)
        unrecorded = unrecorded_objects(conn)
        watch = ledger.watch_backlog(conn)  # what `veil watch` last saw of the inbox
        watch["updated_at"] = _iso(watch["updated_at"])
    return {
        "sources": sources["n"] if sources else 0,
        "jobs": {str(s): states.get(s, 0) for s in JobState},
        "failures": [{"source_id": str(f["source_id"]), "job_id": str(f["job_id"]),
                      "error": f["error"]} for f in failures],
        "deletions": {
            "due": deletions.get("due", 0),
            "overdue": deletions.get("overdue", 0),
            "deferred": deferred["n"] if deferred else 0,
            "failed": deletions.get("failed", 0),
            "oldest_overdue": _iso(deletions.get("oldest_overdue")),
            "next_due": _iso(deletions.get("next_due")),
        },
        "videos": videos,
        "stalled": stalled,
        "unrecorded_objects": unrecorded,
        "watch": watch,
    }


def video_progress(conn: db.Conn, limit: int = 50) -> list[dict[str, Any]]:
    """Videos whose assembly has not finished: chunks and frames done of their totals."""
    rows = conn.execute(
        "SELECT j.source_id, count(*) AS chunks,"
        " count(*) FILTER (WHERE j.state = 'succeeded') AS chunks_done,"
        " coalesce(sum(j.frame_count), 0) AS frames,"
        " coalesce(sum(CASE WHEN j.state = 'succeeded' THEN j.frame_count"
        "  ELSE least(j.frames_done, j.frame_count) END), 0) AS frames_done,"
        " max(a.state) AS assembly"
        " FROM jobs j JOIN jobs a ON a.source_id = j.source_id AND a.kind = 'assemble'"
        " WHERE j.kind = 'chunk' AND a.state IN ('queued', 'running')"
        " GROUP BY j.source_id ORDER BY min(j.created_at) LIMIT %s", (limit,)).fetchall()
    return [{"source_id": str(r["source_id"]), "chunks_done": r["chunks_done"],
             "chunks": r["chunks"], "frames_done": int(r["frames_done"]),
             "frames": int(r["frames"]),
             "assembling": r["assembly"] == "running"} for r in rows]


def lineage(source_id: uuid.UUID, settings: Settings) -> dict[str, Any] | None:
    with db.connect(settings) as conn:
        source = conn.execute(
            "SELECT id, sha256, kind, media_format, original_name, size_bytes, raw_bucket, raw_key,"
            " raw_version_id, policy_name, policy_version, camera, captured_at, origin, created_at"
            " FROM sources WHERE id = %s", (source_id,)).fetchone()
        if source is None:
            return None
        jobs = conn.execute(
            "SELECT id, kind, chunk_index, state, attempts, attempt_causes, error, worker,"
            " enqueued_at, started_at, finished_at, lease_expires_at, frame_start, frame_count,"
            " frames_done FROM jobs WHERE source_id = %s"
            " ORDER BY kind = 'assemble', chunk_index", (source_id,)
        ).fetchall()
        artifacts = conn.execute(
            "SELECT job_id, stage, model_version, bucket, key, version_id, sha256, size_bytes,"
            " content_type, width, height, params, input_sha256, timings, created_at"
            " FROM artifacts WHERE source_id = %s ORDER BY id", (source_id,)).fetchall()
        detections = conn.execute(
            "SELECT d.job_id, d.frame_index, d.frame_end, d.class, d.score, d.x1, d.y1, d.x2, d.y2"
            " FROM detections d JOIN jobs j ON j.id = d.job_id WHERE j.source_id = %s"
            " ORDER BY d.frame_index, d.score DESC", (source_id,)).fetchall()
        deletions = conn.execute(
            "SELECT bucket, key, due_at, state, reason, attempts, last_error, done_at"
            " FROM deletion_tasks WHERE source_id = %s ORDER BY due_at", (source_id,)).fetchall()
        holds = conn.execute(
            "SELECT id, reason, set_by, set_at, released_by, released_at FROM legal_holds"
            " WHERE source_id = %s ORDER BY set_at", (source_id,)).fetchall()
    return _jsonable({
        "source": source, "jobs": jobs, "artifacts": artifacts,
        "detections": detections, "deletions": deletions, "legal_holds": holds,
    })


def overdue_warning(data: dict[str, Any]) -> str | None:
    """The line `veil status` shouts when a retention deadline was missed (invariant 4)."""
    dels = data["deletions"]
    if not dels["overdue"]:
        return None
    return (f"WARNING: {dels['overdue']} deletions are OVERDUE (oldest due "
            f"{dels['oldest_overdue']}; {dels['failed']} failing). Is `veil beat` running with "
            "a worker? Run `veil purge --now`; see `veil purge --dry-run`.")


def stalled_lines(data: dict[str, Any]) -> list[str]:
    """One line per stalled job: what it waits for and for how long (`veil status` text)."""
    return [f"stalled {j['kind']:<8} job {j['job_id']}  source {j['source_id']}  {j['why']} "
            f"{_span(j['stalled_s'])} ago (age {_span(j['age_s'])}, {j['attempts']} attempts)"
            for j in data.get("stalled", [])]


def stalled_warning(data: dict[str, Any], settings: Settings) -> str | None:
    """Shouted when a job stayed stalled longer than the sweeper should have let it."""
    late = [j for j in data.get("stalled", [])
            if j["stalled_s"] > 2 * settings.limits.sweep_interval_s]
    if not late:
        return None
    return (f"WARNING: {len(late)} jobs stalled for longer than two sweeps "
            f"({2 * settings.limits.sweep_interval_s} s). Is `veil beat` running, with a worker "
            "on the maintenance queue?")


def unrecorded_line(data: dict[str, Any]) -> str | None:
    """Objects no source claims (orphans, unrecorded uploads): they are deleted when due."""
    info = data.get("unrecorded_objects") or {}
    if not (info.get("orphans") or info.get("unrecorded_uploads")):
        return None
    return (f"unrecorded objects: {info['orphans']} orphans (no ledger row), "
            f"{info['unrecorded_uploads']} uploads of ingests that did not record them; "
            f"deletion due from {info['next_due']} (see `veil purge --dry-run`)")


def _span(seconds: float) -> str:
    """97.0 -> 1m37s; 7300 -> 2h01m."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value
