"""`veil audit`: who did what, when, from the append-only ``audit_events`` table.

Actors are service roles with host and pid (``producer``, ``worker@host:pid``,
``purge@host:pid``) or a person at the console (``operator:login``). Events carry ids, bucket
and key, never file names or pixels (invariant 5).
"""

from __future__ import annotations

import getpass
import uuid
from datetime import datetime
from typing import Any

from infra import db
from infra.settings import Settings


def operator_identity() -> str:
    """The actor of commands run by a person: the operating-system login."""
    try:
        return f"operator:{getpass.getuser()}"
    except Exception:  # no login name (some containers): still an operator, not a service
        return "operator:unknown"


def query_audit(settings: Settings, *, source_id: uuid.UUID | None = None,
                since: datetime | None = None, until: datetime | None = None,
                actions: tuple[str, ...] = (), limit: int = 1000) -> list[dict[str, Any]]:
    """Events in time order, filtered; the newest ``limit`` when there are more."""
    where: list[str] = []
    params: list[object] = []
    if source_id is not None:
        where.append("source_id = %s")
        params.append(source_id)
    if since is not None:
        where.append("at >= %s")
        params.append(since)
    if until is not None:
        where.append("at <= %s")
        params.append(until)
    if actions:
        where.append("action = ANY(%s)")
        params.append(list(actions))
    sql = ("SELECT id, at, actor, action, source_id, job_id, bucket, key, detail FROM ("
           "SELECT * FROM audit_events" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY at DESC, id DESC LIMIT %s) recent ORDER BY at, id")
    with db.connect(settings) as conn:
        rows = conn.execute(sql, [*params, limit]).fetchall()  # type: ignore[call-overload]
    return [{**r, "at": r["at"].isoformat(),
             "source_id": str(r["source_id"]) if r["source_id"] else None,
             "job_id": str(r["job_id"]) if r["job_id"] else None} for r in rows]


def summarize(event: dict[str, Any]) -> str:
    """One line for people: time, actor, action, source, object, the telling detail."""
    detail = event["detail"] or {}
    extra = ""
    if event["action"] in ("erase", "hold_set", "hold_release") and detail.get("reason"):
        extra = f" reason={detail['reason']!r}"
    elif event["action"] == "purge":
        extra = f" versions={len(detail.get('versions', []))}"
    elif event["action"] in ("purge_deferred",):
        extra = f" hold={detail.get('hold_id')}"
    elif event["action"] in ("purge_failed", "job_failed"):
        extra = f" error={detail.get('error') or detail.get('reason')!r}"
    where = f" {event['bucket']}/{event['key']}" if event["bucket"] else ""
    return (f"{event['at']}  {event['actor']:<28} {event['action']:<15} "
            f"{event['source_id'] or '-':<36}{where}{extra}")
