"""The reconciler: every object in raw, work and redacted has a ledger row (invariant 9).

An ingest records a deletion task before it uploads (its intent, ``infra.reconcile``), and a
worker records its output in the transaction after the put; a process killed in between leaves
an object the ledger does not name. Every object Veil writes has a deletion task, so an object
without a live one is an orphan. On a schedule (``limits.reconcile_interval_s``) this lists the
buckets, finds such objects older than ``limits.orphan_grace_s``, and gives each a deletion task
due now with an audit event, so the next purge deletes every version of it with a receipt.

Not an orphan: an object under ``sources/<id>/`` whose source still has a queued or running job
(that job writes the same deterministic key again and records it; deleting it then would race
the record). The buckets must belong to this ledger alone: another deployment's objects in
them would be orphans here. Hazards: the listing is O(objects) per run (checked against the
ledger 500 keys at a time); it uses the retention credentials, behind :func:`list_objects`
alone, so moving it to another role changes one function.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from infra import db, ledger, ledger_deletions
from infra.db import Conn
from infra.objectstore import client_for, transient_errors
from infra.reconcile import ORPHAN_REASON
from infra.settings import Settings
from schemas.enums import AuditAction

log = logging.getLogger(__name__)

CHECK_BATCH = 500
_SOURCE_KEY = re.compile(r"^sources/([0-9a-f-]{36})/")


def reconciler_identity() -> str:
    return f"reconciler@{socket.gethostname()}:{os.getpid()}"


@dataclass
class ReconcileReport:
    listed: int = 0
    orphans: list[tuple[str, str]] = field(default_factory=list)  # (bucket, key) scheduled now

    def as_dict(self) -> dict[str, object]:
        return {"listed": self.listed, "orphans": len(self.orphans),
                "objects": [f"{b}/{k}" for b, k in self.orphans]}


def list_objects(settings: Settings, bucket: str) -> Iterator[tuple[str, datetime]]:
    """(key, newest version's time) of every key in ``bucket`` that has any version, delete
    markers' keys included (their older versions still hold bytes). The one place that lists
    for the reconciler: its credentials change here."""
    client = client_for("retention", settings)  # lists every bucket; deletes via the purge
    newest: dict[str, datetime] = {}
    with transient_errors():
        for obj in client.list_objects(bucket, recursive=True, include_version=True):
            if obj.object_name is None or obj.is_dir:
                continue
            at = obj.last_modified or datetime.now(UTC)
            if obj.object_name not in newest or at > newest[obj.object_name]:
                newest[obj.object_name] = at
    yield from newest.items()


def reconcile(settings: Settings, grace_s: int | None = None,
              actor: str | None = None) -> ReconcileReport:
    """One pass over raw, work and redacted; returns what it listed and scheduled."""
    grace = settings.limits.orphan_grace_s if grace_s is None else grace_s
    actor = actor or reconciler_identity()
    cutoff = datetime.now(UTC) - timedelta(seconds=grace)
    report = ReconcileReport()
    s3 = settings.s3
    for bucket in (s3.bucket_raw, s3.bucket_work, s3.bucket_redacted):
        old = []
        for key, at in list_objects(settings, bucket):
            report.listed += 1
            if at <= cutoff:
                old.append(key)
        for start in range(0, len(old), CHECK_BATCH):
            with db.transaction(settings) as conn:
                found = schedule_orphans(conn, bucket, old[start:start + CHECK_BATCH], actor)
            report.orphans.extend((bucket, k) for k in found)
    if report.orphans:
        log.warning("reconciler: %d objects had no ledger row; deletion scheduled now",
                    len(report.orphans))
    return report


def schedule_orphans(conn: Conn, bucket: str, keys: list[str], actor: str) -> list[str]:
    """Give each key of ``keys`` without a live deletion task (pending, failed or deferred) a
    task due now, with an audit event; the check and the write are one statement, so a record
    committed meanwhile wins. A key whose task is done (its object purged) but which holds an
    object again gets its task back, due now."""
    if not keys:
        return []
    sources = [_source_of(k) for k in keys]
    found = ledger_deletions.schedule_orphan_deletions(conn, bucket, keys, sources,
                                                       ORPHAN_REASON)
    for key in found:
        ledger.audit(conn, actor, AuditAction.ORPHAN_FOUND, bucket=bucket, key=key,
                     detail={"reason": ORPHAN_REASON})
    return found


def _source_of(key: str) -> uuid.UUID | None:
    match = _SOURCE_KEY.match(key)
    if not match:
        return None
    try:
        return uuid.UUID(match.group(1))
    except ValueError:
        return None
