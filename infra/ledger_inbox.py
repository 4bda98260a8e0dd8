"""The inbox watcher's tables: ``inbox_objects`` (one row per inbox object version handled, the
key of exactly-once ingestion) and ``inbox_cursors`` (where each watched listing stands).

Owner of both. The producer role (``veil_producer``: `veil watch`, `veil ingest s3://`) runs
every write; `veil status` reads :func:`watch_backlog` as the operator (``veil_operator``). The
inbox copy's deletion task is the deletions' owner's (``schedule_inbox_deletion``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infra.db import Conn


@dataclass(frozen=True)
class InboxRef:
    """Which inbox object version an input is: the ledger's key for exactly-once ingestion."""

    bucket: str
    key_sha256: str
    version_id: str | None
    size: int
    uploaded_at: datetime | None


def record_inbox_object(conn: Conn, inbox: InboxRef, *, source_id: uuid.UUID | None,
                        outcome: str, size_bytes: int, detail: str | None = None) -> bool:
    """One row per inbox object version handled; False when it was handled already (another
    delivery of the same version), in which case the caller's transaction changes nothing."""
    row = conn.execute(
        "INSERT INTO inbox_objects (bucket, key_sha256, version_id, source_id, outcome, detail,"
        " size_bytes, uploaded_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING bucket",
        (inbox.bucket, inbox.key_sha256, inbox.version_id or "", source_id, outcome, detail,
         size_bytes, inbox.uploaded_at)).fetchone()
    return row is not None


def inbox_outcome(conn: Conn, bucket: str, key_sha256: str,
                  version_id: str | None) -> dict[str, Any] | None:
    """The recorded outcome of one inbox object version (None: never handled)."""
    return conn.execute(
        "SELECT source_id, outcome, detail, released_at FROM inbox_objects"
        " WHERE bucket = %s AND key_sha256 = %s AND version_id = %s",
        (bucket, key_sha256, version_id or "")).fetchone()


def mark_inbox_released(conn: Conn, bucket: str, key_sha256: str, version_id: str | None) -> None:
    conn.execute("UPDATE inbox_objects SET released_at = now() WHERE bucket = %s AND"
                 " key_sha256 = %s AND version_id = %s AND released_at IS NULL",
                 (bucket, key_sha256, version_id or ""))


def inbox_cursor(conn: Conn, bucket: str, prefix: str) -> str:
    row = conn.execute("SELECT position FROM inbox_cursors WHERE bucket = %s AND prefix = %s",
                       (bucket, prefix)).fetchone()
    return str(row["position"]) if row else ""


@dataclass(frozen=True)
class InboxPrefix:
    """One watched listing: a bucket and the key prefix inside it (a cursor's identity)."""

    bucket: str
    prefix: str


def save_inbox_cursor(conn: Conn, where: InboxPrefix, position: str, *,
                      backlog: int | None = None, paused: bool | None = None,
                      sweep_done: bool = False) -> None:
    """Move the listing cursor (durable across restarts) and the figures `veil status` shows."""
    conn.execute(
        "INSERT INTO inbox_cursors AS c (bucket, prefix, position, backlog, paused, sweeps)"
        " VALUES (%(b)s, %(p)s, %(pos)s, coalesce(%(backlog)s, 0), coalesce(%(paused)s, false),"
        " %(inc)s) ON CONFLICT (bucket, prefix) DO UPDATE SET position = %(pos)s,"
        " backlog = coalesce(%(backlog)s, c.backlog), paused = coalesce(%(paused)s, c.paused),"
        " sweeps = c.sweeps + %(inc)s, updated_at = now()",
        {"b": where.bucket, "p": where.prefix, "pos": position, "backlog": backlog,
         "paused": paused, "inc": int(sweep_done)})


def watch_backlog(conn: Conn) -> dict[str, Any]:
    """What the watchers last saw: objects waiting in the inbox, paused or not, and when."""
    row = conn.execute(
        "SELECT coalesce(sum(backlog), 0) AS backlog, coalesce(bool_or(paused), false) AS paused,"
        " max(updated_at) AS updated_at, coalesce(sum(sweeps), 0) AS sweeps FROM inbox_cursors"
    ).fetchone() or {}
    rejected = conn.execute("SELECT count(*) AS n FROM inbox_objects WHERE outcome = 'rejected'"
                            " AND released_at IS NULL").fetchone()
    return {"backlog": int(row.get("backlog", 0)), "paused": bool(row.get("paused")),
            "updated_at": row.get("updated_at"), "sweeps": int(row.get("sweeps", 0)),
            "rejected_kept": rejected["n"] if rejected else 0}
