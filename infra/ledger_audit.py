"""The audit trail's one writer: ``audit_events`` is append-only (invariant 3).

Its own module so that every table owner (jobs, sources, deletions) can record an event without
importing the rest of the ledger.
"""

from __future__ import annotations

import uuid
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
