"""Legal holds: freeze a source's objects for an investigation (`veil hold set | release`).

`veil hold` connects as the PostgreSQL role ``veil_retention`` and uses the S3 role ``hold``,
the only identity that may set or lift an S3 legal hold (docs/security.md).

A hold lives in the ledger (``legal_holds``, one active hold per source); the purge defers the
deletion of a held source's objects and `veil erase` refuses it, naming the hold. Where a bucket
was created with S3 object lock, the hold is also applied to every stored version as an S3 legal
hold, so not even an admin client can delete them behind the ledger's back. Objects written
after the hold was set (an output finishing later) are covered by the ledger hold only.

Setting a hold locks the source row (serialising with erasure) and the source's deletion tasks:
a purge that is deleting them right now finishes first, and the hold reports what was already
gone; any purge that starts later sees the hold.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from minio import Minio

from infra import db, ledger
from infra.db import Conn
from infra.objectstore import client_for, list_all_versions, set_legal_hold, supports_object_lock
from infra.settings import Settings
from schemas.enums import AuditAction


class RightsError(Exception):
    """A request about a source that cannot be carried out; the message names the source."""


@dataclass(frozen=True)
class ActiveHold:
    id: int
    source_id: uuid.UUID
    reason: str
    set_by: str
    set_at: datetime

    def describe(self) -> str:
        return (f"legal hold {self.id} set by {self.set_by} at {self.set_at:%Y-%m-%d %H:%M:%S %Z}"
                f" ({self.reason})")


def active_hold(conn: Conn, source_id: uuid.UUID | str) -> ActiveHold | None:
    row = conn.execute(
        "SELECT id, source_id, reason, set_by, set_at FROM legal_holds"
        " WHERE source_id = %s AND released_at IS NULL", (source_id,)).fetchone()
    return ActiveHold(**row) if row else None


def lock_source(conn: Conn, source_id: uuid.UUID | str) -> dict[str, Any]:
    """Lock the source row (holds and erasures of one source run one at a time)."""
    row = conn.execute(
        "SELECT id, raw_bucket, raw_key, erased_at FROM sources WHERE id = %s FOR UPDATE",
        (source_id,)).fetchone()
    if row is None:
        raise RightsError(f"no source {source_id}")
    return row


def source_objects(conn: Conn, s3: Minio, settings: Settings,
                   source_id: uuid.UUID | str) -> list[tuple[str, str]]:
    """Every (bucket, key) of a source: its raw original, recorded outputs and deletion tasks,
    plus whatever lies under ``sources/<id>/`` in `work` and `redacted` (chunks written but not
    yet recorded)."""
    found: set[tuple[str, str]] = set()
    for row in conn.execute(
            "SELECT raw_bucket AS bucket, raw_key AS key FROM sources WHERE id = %(id)s"
            " UNION SELECT inbox_bucket, inbox_key FROM sources"
            " WHERE id = %(id)s AND inbox_key IS NOT NULL"
            " UNION SELECT bucket, key FROM artifacts WHERE source_id = %(id)s"
            " UNION SELECT bucket, key FROM deletion_tasks WHERE source_id = %(id)s",
            {"id": source_id}):
        found.add((row["bucket"], row["key"]))
    prefix = f"sources/{uuid.UUID(str(source_id))}/"
    for bucket in (settings.s3.bucket_work, settings.s3.bucket_redacted):
        found.update((bucket, key) for key, _ in list_all_versions(s3, bucket, prefix))
    return sorted(found)


def _apply_s3_holds(s3: Minio, objects: list[tuple[str, str]], enabled: bool,
                    settings: Settings) -> int:
    supported: dict[str, bool] = {}
    versions = 0
    for bucket, key in objects:
        if bucket == settings.s3.bucket_inbox:
            continue  # the inbox copy is deleted once ingested; the hold covers the raw copy
        if bucket not in supported:
            supported[bucket] = supports_object_lock(s3, bucket)
        if supported[bucket]:
            versions += set_legal_hold(s3, bucket, key, enabled)
    return versions


def set_hold(settings: Settings, source_id: uuid.UUID, reason: str, actor: str,
             s3: Minio | None = None, forbid_reveal: bool = False) -> dict[str, Any]:
    """Put a source under legal hold; refuses an erased source or one already held.
    ``forbid_reveal`` also refuses `veil dsar --reveal` on it while the hold lasts."""
    if not reason.strip():
        raise RightsError(f"source {source_id}: a legal hold needs a --reason")
    s3 = s3 or client_for("hold", settings)
    with db.transaction(settings) as conn:
        source = lock_source(conn, source_id)
        if source["erased_at"] is not None:
            raise RightsError(f"source {source_id} was erased at "
                              f"{source['erased_at']:%Y-%m-%d %H:%M:%S %Z}; nothing left to hold")
        existing = active_hold(conn, source_id)
        if existing is not None:
            raise RightsError(f"source {source_id} is already under {existing.describe()}")
        # Waits for a purge that is deleting this source's objects right now (see module doc).
        tasks = conn.execute("SELECT bucket, key, state FROM deletion_tasks WHERE source_id = %s"
                             " FOR UPDATE", (source_id,)).fetchall()
        hold_id = conn.execute(
            "INSERT INTO legal_holds (source_id, reason, set_by, forbids_reveal)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (source_id, reason, actor, forbid_reveal)).fetchone()["id"]  # type: ignore[index]
        gone = {(t["bucket"], t["key"]) for t in tasks if t["state"] == "done"}
        objects = [o for o in source_objects(conn, s3, settings, source_id) if o not in gone]
        versions = _apply_s3_holds(s3, objects, True, settings)
        conn.execute("UPDATE legal_holds SET s3_objects = %s WHERE id = %s", (versions, hold_id))
        result = {"hold_id": hold_id, "source_id": str(source_id), "reason": reason,
                  "set_by": actor, "objects_held": len(objects), "s3_versions_locked": versions,
                  "already_deleted": [f"{b}/{k}" for b, k in sorted(gone)],
                  "forbids_reveal": forbid_reveal}
        ledger.audit(conn, actor, AuditAction.HOLD_SET, source_id=source_id,
                     detail={k: v for k, v in result.items() if k != "source_id"})
    return result


def release_hold(settings: Settings, source_id: uuid.UUID, reason: str, actor: str,
                 s3: Minio | None = None) -> dict[str, Any]:
    """Release the source's active hold; deferred deletions become due again at once."""
    if not reason.strip():
        raise RightsError(f"source {source_id}: releasing a legal hold needs a --reason")
    s3 = s3 or client_for("hold", settings)
    with db.transaction(settings) as conn:
        lock_source(conn, source_id)
        hold = active_hold(conn, source_id)
        if hold is None:
            raise RightsError(f"source {source_id} has no active legal hold")
        conn.execute("UPDATE legal_holds SET released_at = now(), released_by = %s,"
                     " release_reason = %s WHERE id = %s", (actor, reason, hold.id))
        versions = _apply_s3_holds(s3, source_objects(conn, s3, settings, source_id), False,
                                   settings)
        resumed = conn.execute(
            "UPDATE deletion_tasks SET state = 'pending', next_attempt_at = NULL,"
            " last_error = NULL WHERE source_id = %s AND state = 'deferred' RETURNING id",
            (source_id,)).fetchall()
        result = {"hold_id": hold.id, "source_id": str(source_id), "reason": reason,
                  "released_by": actor, "s3_versions_unlocked": versions,
                  "deletions_resumed": len(resumed)}
        ledger.audit(conn, actor, AuditAction.HOLD_RELEASE, source_id=source_id,
                     detail={k: v for k, v in result.items() if k != "source_id"})
    return result


def list_holds(settings: Settings, include_released: bool = False) -> list[dict[str, Any]]:
    where = "" if include_released else " WHERE released_at IS NULL"
    with db.connect(settings) as conn:
        return conn.execute(
            "SELECT id, source_id, reason, set_by, set_at, released_by, released_at,"
            f" release_reason, s3_objects FROM legal_holds{where} ORDER BY set_at, id"
        ).fetchall()
