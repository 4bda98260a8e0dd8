"""`veil status`: what the ledger says, overall or for one source."""

from __future__ import annotations

import uuid
from typing import Any

from infra import db, jobs, ledger_inbox, ledger_reports
from infra.reconcile import unrecorded_objects
from infra.settings import Settings
from schemas.enums import JobState


def overview(settings: Settings) -> dict[str, Any]:
    with db.connect(settings) as conn:
        states = ledger_reports.job_counts(conn)
        failures = ledger_reports.recent_failures(conn)
        deletions = ledger_reports.deletion_summary(conn)
        sources = ledger_reports.source_count(conn)
        videos = video_progress(conn)
        stalled = jobs.stalled_jobs(conn, settings.limits.requeue_after_s)
        unrecorded = unrecorded_objects(conn)
        watch = ledger_inbox.watch_backlog(conn)  # what `veil watch` last saw of the inbox
        watch["updated_at"] = _iso(watch["updated_at"])
    return {
        "sources": sources,
        "jobs": {str(s): states.get(s, 0) for s in JobState},
        "failures": [{"source_id": str(f["source_id"]), "job_id": str(f["job_id"]),
                      "error": f["error"]} for f in failures],
        "deletions": {
            "due": deletions.get("due", 0),
            "overdue": deletions.get("overdue", 0),
            "deferred": deletions["deferred"],
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
    return [{"source_id": str(r["source_id"]), "chunks_done": r["chunks_done"],
             "chunks": r["chunks"], "frames_done": int(r["frames_done"]),
             "frames": int(r["frames"]), "assembling": r["assembly"] == JobState.RUNNING}
            for r in ledger_reports.video_progress(conn, limit)]


def lineage(source_id: uuid.UUID, settings: Settings) -> dict[str, Any] | None:
    with db.connect(settings) as conn:
        rows = ledger_reports.lineage(conn, source_id)
    return None if rows is None else _jsonable(rows)


def lineage_lines(data: dict[str, Any]) -> list[str]:
    """One source's lineage for a person reading it (`veil status SOURCE_ID`; ``--json`` gives
    the whole record): the source, each job, each output, detections per class, deletions and
    legal holds, a line each."""
    src = data["source"]
    lines = [f"source {src['id']}  {src['kind']} {src['media_format']}  "
             f"{src['original_name'] or '(no name)'}  {src['size_bytes']:,} bytes  "
             f"policy {src['policy_name']} v{src['policy_version']}  {src['origin']}  "
             f"ingested {_day_time(src['created_at'])}"]
    if src.get("camera") or src.get("captured_at"):
        lines.append(f"  camera {src.get('camera') or '-'}  captured "
                     f"{_day_time(src.get('captured_at')) or '-'}")
    lines.append(f"  raw {src['raw_bucket']}/{src['raw_key']}  version {src['raw_version_id']}")
    for job in data["jobs"]:
        frames = (f"  frames {job['frame_start']}+{job['frame_count']} ({job['frames_done']} done)"
                  if job.get("frame_count") is not None else "")
        kind = f"chunk {job['chunk_index']}" if job["kind"] == "chunk" else job["kind"]
        lines.append(f"job {job['id']}  {kind}  {job['state']}  "
                     f"attempts {job['attempts']}{_causes(job.get('attempt_causes'))}  "
                     f"worker {job['worker'] or '-'}{frames}"
                     + (f"  error: {job['error']}" if job.get("error") else ""))
    for art in data["artifacts"]:
        guard = (art.get("params") or {}).get("guard", {}).get("action")
        size = f"{art['width']}x{art['height']}  " if art.get("width") else ""
        lines.append(f"output {art['stage']}  {art['bucket']}/{art['key']}  {size}"
                     f"{art['size_bytes']:,} bytes  sha256 {art['sha256'][:16]}...  model "
                     f"{art['model_version']}" + (f"  guard {guard}" if guard else ""))
    per_class: dict[str, int] = {}
    for det in data["detections"]:
        per_class[det["class"]] = per_class.get(det["class"], 0) + 1
    lines.append(f"detections {len(data['detections'])}"
                 + "".join(f"  {cls} {n}" for cls, n in sorted(per_class.items())))
    for dele in data["deletions"]:
        when = (f"done {_day_time(dele['done_at'])}" if dele.get("done_at")
                else f"due {_day_time(dele['due_at'])}")
        lines.append(f"deletion {dele['bucket']}/{dele['key']}  {dele['state']}  {when}  "
                     f"({dele['reason']})" + (f"  last error: {dele['last_error']}"
                                              if dele.get("last_error") else ""))
    for hold in data["legal_holds"]:
        released = (f"released {_day_time(hold['released_at'])} by {hold['released_by']}"
                    if hold.get("released_at") else "ACTIVE")
        lines.append(f"legal hold {released}  set {_day_time(hold['set_at'])} by "
                     f"{hold['set_by']}: {hold['reason']}")
    return lines


def _causes(counts: dict[str, int] | None) -> str:
    """`` (redelivered 1, lease_expired 2)``: why attempts ended, when any did."""
    shown = [f"{cause} {n}" for cause, n in sorted((counts or {}).items()) if n]
    return f" ({', '.join(shown)})" if shown else ""


def _day_time(value: str | None) -> str | None:
    """An ISO timestamp as day and time to the second, UTC as stored."""
    return value[:19].replace("T", " ") if value else None


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
