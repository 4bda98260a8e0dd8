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
gone; any purge that starts later sees the hold. The source lock and the list of a source's
objects are the erasure's own (``workers.retention.erase``), so both see the same objects.
"""

from __future__ import annotations

import uuid
from typing import Any

from minio import Minio

from infra import db, ledger, ledger_deletions, ledger_holds
from infra.ledger_deletions import lock_deletion_tasks
from infra.ledger_holds import HoldRecord, active_hold
from infra.objectstore import client_for, set_legal_hold, supports_object_lock
from infra.settings import Settings
from schemas.enums import AuditAction, DeletionState
from workers.retention.erase import RightsError, locked_source, source_objects


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
        source = locked_source(conn, source_id)
        if source.erased_at is not None:
            raise RightsError(f"source {source_id} was erased at "
                              f"{source.erased_at:%Y-%m-%d %H:%M:%S %Z}; nothing left to hold")
        existing = active_hold(conn, source_id)
        if existing is not None:
            raise RightsError(f"source {source_id} is already under {existing.describe()}")
        # Waits for a purge that is deleting this source's objects right now (see module doc).
        tasks = lock_deletion_tasks(conn, source_id)
        hold_id = ledger_holds.insert_hold(conn, source_id, reason, actor, forbid_reveal)
        gone = {(t.bucket, t.key) for t in tasks if t.state == DeletionState.DONE}
        objects = [o for o in source_objects(conn, s3, settings, source_id) if o not in gone]
        versions = _apply_s3_holds(s3, objects, True, settings)
        ledger_holds.record_s3_versions(conn, hold_id, versions)
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
        locked_source(conn, source_id)
        hold = active_hold(conn, source_id)
        if hold is None:
            raise RightsError(f"source {source_id} has no active legal hold")
        ledger_holds.release(conn, hold.id, actor, reason)
        versions = _apply_s3_holds(s3, source_objects(conn, s3, settings, source_id), False,
                                   settings)
        resumed = ledger_deletions.resume_deferred_deletions(conn, source_id)
        result = {"hold_id": hold.id, "source_id": str(source_id), "reason": reason,
                  "released_by": actor, "s3_versions_unlocked": versions,
                  "deletions_resumed": resumed}
        ledger.audit(conn, actor, AuditAction.HOLD_RELEASE, source_id=source_id,
                     detail={k: v for k, v in result.items() if k != "source_id"})
    return result


def list_holds(settings: Settings, include_released: bool = False) -> list[HoldRecord]:
    with db.connect(settings) as conn:
        return ledger_holds.list_holds(conn, include_released)
