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

from infra import db, ledger_audit
from infra.settings import Settings
from schemas.enums import AuditAction


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
    with db.connect(settings) as conn:
        rows = ledger_audit.audit_events(conn, source_id=source_id, since=since, until=until,
                                         actions=actions, limit=limit)
    return [{**r, "at": r["at"].isoformat(),
             "source_id": str(r["source_id"]) if r["source_id"] else None,
             "job_id": str(r["job_id"]) if r["job_id"] else None} for r in rows]


_WITH_REASON = (AuditAction.ERASE, AuditAction.HOLD_SET, AuditAction.HOLD_RELEASE)


def summarize(event: dict[str, Any]) -> str:
    """One line for people: time, actor, action, source, object, the telling detail."""
    detail = event["detail"] or {}
    extra = ""
    action = event["action"]
    if action in _WITH_REASON and detail.get("reason"):
        extra = f" reason={detail['reason']!r}"
    elif action == AuditAction.PURGE:
        extra = f" versions={len(detail.get('versions', []))}"
    elif action == AuditAction.PURGE_DEFERRED:
        extra = f" hold={detail.get('hold_id')}"
    elif action in (AuditAction.PURGE_FAILED, AuditAction.JOB_FAILED):
        extra = f" error={detail.get('error') or detail.get('reason')!r}"
    where = f" {event['bucket']}/{event['key']}" if event["bucket"] else ""
    return (f"{event['at']}  {event['actor']:<28} {event['action']:<15} "
            f"{event['source_id'] or '-':<36}{where}{extra}")
