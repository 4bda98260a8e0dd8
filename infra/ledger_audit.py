"""The audit trail's one writer: ``audit_events`` is append-only (invariant 3).

Its own module so that every table owner (jobs, sources, deletions) can record an event without
importing the rest of the ledger.
"""

from __future__ import annotations

import uuid
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import Conn
from schemas.enums import AuditAction


def audit(
    conn: Conn,
    actor: str,
    action: AuditAction,
    *,
    source_id: uuid.UUID | str | None = None,
    job_id: uuid.UUID | str | None = None,
    bucket: str | None = None,
    key: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        "INSERT INTO audit_events (actor, action, source_id, job_id, bucket, key, detail)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (actor, str(action), source_id, job_id, bucket, key, Jsonb(detail or {})),
    )
