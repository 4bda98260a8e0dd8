"""The audit trail: ``audit_events`` is append-only (invariant 3); :func:`audit` is its one
writer and :func:`audit_events` the reader behind `veil audit`.

Owner of ``audit_events``. Every runtime role may insert and select (``veil_producer``,
``veil_worker``, ``veil_retention``, ``veil_operator``); none may update or delete, and
``veil_owner`` owns the table. Its own module so that every table owner (jobs, sources,
deletions) can record an event without importing the rest of the ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict, Unpack

from psycopg.types.json import Jsonb

from infra.db import Conn
from schemas.enums import AuditAction


class AuditFields(TypedDict, total=False):
    """Where an audit event happened and what it says; every field is optional, so callers name
    only the ones that apply (one TypedDict instead of five keyword arguments)."""

    source_id: uuid.UUID | str | None
    job_id: uuid.UUID | str | None
    bucket: str | None
    key: str | None
    detail: dict[str, Any] | None


def audit(conn: Conn, actor: str, action: AuditAction, **fields: Unpack[AuditFields]) -> None:
    conn.execute(
        "INSERT INTO audit_events (actor, action, source_id, job_id, bucket, key, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (actor, str(action), fields.get("source_id"), fields.get("job_id"), fields.get("bucket"),
         fields.get("key"), Jsonb(fields.get("detail") or {})),
    )


def audit_events(conn: Conn, *, source_id: uuid.UUID | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 actions: Sequence[str] = (), limit: int = 1000) -> list[dict[str, Any]]:
    """Events in time order, filtered by source, time (both ends included) and actions; the
    newest ``limit`` when there are more."""
    where: list[str] = []
    params: list[object] = []
    for clause, value in (("source_id = %s", source_id), ("at >= %s", since),
                          ("at <= %s", until), ("action = ANY(%s)", list(actions) or None)):
        if value is not None:
            where.append(clause)
            params.append(value)
    sql = ("SELECT id, at, actor, action, source_id, job_id, bucket, key, detail FROM ("
           "SELECT * FROM audit_events" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY at DESC, id DESC LIMIT %s) recent ORDER BY at, id")
    return conn.execute(sql, [*params, limit]).fetchall()  # type: ignore[call-overload]
