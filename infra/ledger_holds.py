"""Legal holds: the ``legal_holds`` table, and its ``active_legal_holds`` view (migration 0011).

Owner of ``legal_holds``. Only `veil hold` changes a hold (invariant 8): it connects as
``veil_retention``, the one role with INSERT and UPDATE on the table. Every runtime role may
read holds; the erasure (``veil_retention``) and `veil dsar --reveal` (``veil_operator``) call
:func:`active_hold`. A hold is active while the view lists it: the rule "until released" is
written there once, never repeated here.

Resuming what a hold deferred is ``infra.ledger_deletions.resume_deferred_deletions`` (the
owner of ``deletion_tasks``), run in the release's transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict, cast

from infra.db import Conn


@dataclass(frozen=True)
class ActiveHold:
    """A hold in force on a source (one at most per source)."""

    id: int
    source_id: uuid.UUID
    reason: str
    set_by: str
    set_at: datetime
    forbids_reveal: bool

    def describe(self) -> str:
        return (f"legal hold {self.id} set by {self.set_by} at {self.set_at:%Y-%m-%d %H:%M:%S %Z}"
                f" ({self.reason})")


class HoldRecord(TypedDict):
    """A hold as `veil hold list` shows it (released ones carry who released it and why)."""

    id: int
    source_id: uuid.UUID
    reason: str
    set_by: str
    set_at: datetime
    released_by: str | None
    released_at: datetime | None
    release_reason: str | None
    s3_objects: int | None


def active_hold(conn: Conn, source_id: uuid.UUID | str) -> ActiveHold | None:
    row = conn.execute(
        "SELECT id, source_id, reason, set_by, set_at, forbids_reveal FROM active_legal_holds"
        " WHERE source_id = %s", (source_id,)).fetchone()
    return ActiveHold(**row) if row else None


def insert_hold(conn: Conn, source_id: uuid.UUID, reason: str, actor: str,
                forbids_reveal: bool) -> int:
    """Write a new hold; returns its id. The caller has checked that none is active (and holds
    the source row's lock, so none can appear meanwhile)."""
    return int(conn.execute(
        "INSERT INTO legal_holds (source_id, reason, set_by, forbids_reveal)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        (source_id, reason, actor, forbids_reveal)).fetchone()["id"])  # type: ignore[index]


def record_s3_versions(conn: Conn, hold_id: int, versions: int) -> None:
    """How many stored versions also carry an S3 legal hold (buckets with object lock)."""
    conn.execute("UPDATE legal_holds SET s3_objects = %s WHERE id = %s", (versions, hold_id))


def release(conn: Conn, hold_id: int, actor: str, reason: str) -> None:
    conn.execute("UPDATE legal_holds SET released_at = now(), released_by = %s,"
                 " release_reason = %s WHERE id = %s", (actor, reason, hold_id))


_HOLD_COLUMNS = ("id, source_id, reason, set_by, set_at, released_by, released_at,"
                 " release_reason, s3_objects")


def list_holds(conn: Conn, include_released: bool = False) -> list[HoldRecord]:
    """Active holds (or all, released ones included), oldest first."""
    table = "legal_holds" if include_released else "active_legal_holds"
    return cast(list[HoldRecord], conn.execute(
        f"SELECT {_HOLD_COLUMNS} FROM {table} ORDER BY set_at, id").fetchall())
