"""Carrying out an erasure request (right to be forgotten, consent withdrawn).

`veil erase` (``producer.erase``) records the request; the retention worker, the one process
with delete rights (PostgreSQL ``veil_retention``, S3 role ``retention``), carries it out here
(:func:`carry_out`) and writes the receipts on the request. An erase task whose id names no
pending request does nothing: a task sent by hand (through Flower) with made-up ids erases
nothing. `veil erase --now` calls :func:`carry_out` in its own process, with the retention
credentials.

One transaction per source (:func:`erase_source`):

1. lock the source row; refuse, naming the hold, if a legal hold is active;
2. lock every job of the source and cancel those not finished. A worker publishing output locks
   its job row first (``ledger.job_cancelled``), so either its output is already recorded and
   found below, or it sees the cancellation and removes what it wrote;
3. destroy the source's data key (crypto-shredding) before any object is touched;
4. delete every version of every object of the source: the raw original, recorded outputs and
   deletion tasks, and anything under ``sources/<id>/`` in `work` and `redacted`;
5. record a receipt per object on its deletion task, drop detections, turn the source row into
   a tombstone (id and sha256 kept, so the same bytes are refused on re-ingest; no file name,
   camera or capture time), and write the whole receipt as an audit event.

An object that fails to delete does not undo the erasure: its task is left due now, with the
error, and the purge retries it with backoff; the receipt lists it (and `veil erase` exits 1).
Erasing an erased source again retries whatever is left.

`veil hold` shares :func:`locked_source` and :func:`source_objects`: a hold and an erasure of
one source serialise on the source row and see the same objects.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from minio import Minio

from infra import db, jobs, keyring, ledger, ledger_deletions, ledger_rights
from infra.db import Conn
from infra.ledger_deletions import ObjectReceipt
from infra.ledger_holds import active_hold
from infra.ledger_rights import LockedSource
from infra.objectstore import client_for, delete_versions, list_all_versions
from infra.settings import Settings
from schemas.backoff import backoff_s
from schemas.enums import AuditAction

log = logging.getLogger(__name__)
TOMBSTONE_NAME = "erased"


class RightsError(Exception):
    """A request about a source that cannot be carried out; the message names the source."""


def locked_source(conn: Conn, source_id: uuid.UUID | str) -> LockedSource:
    """Lock the source row (holds and erasures of one source run one at a time)."""
    source = ledger_rights.lock_source(conn, source_id)
    if source is None:
        raise RightsError(f"no source {source_id}")
    return source


def source_objects(conn: Conn, s3: Minio, settings: Settings,
                   source_id: uuid.UUID | str) -> list[tuple[str, str]]:
    """Every (bucket, key) of a source: its raw original, recorded outputs and deletion tasks,
    plus whatever lies under ``sources/<id>/`` in `work` and `redacted` (chunks written but not
    yet recorded)."""
    found = ledger_rights.recorded_objects(conn, source_id)
    prefix = f"sources/{uuid.UUID(str(source_id))}/"
    for bucket in (settings.s3.bucket_work, settings.s3.bucket_redacted):
        found.update((bucket, key) for key, _ in list_all_versions(s3, bucket, prefix))
    return sorted(found)


def erase_source(settings: Settings, source_id: uuid.UUID, reason: str, actor: str,
                 s3: Minio | None = None, received_at: datetime | None = None) -> dict[str, Any]:
    """Erase one source and everything derived from it; returns the receipt. ``received_at``
    (when the request came in) goes into the receipt for the response times of `veil report`."""
    if not reason.strip():
        raise RightsError(f"source {source_id}: an erasure needs a --reason")
    s3 = s3 or client_for("retention", settings)
    with db.transaction(settings) as conn:
        source = locked_source(conn, source_id)
        hold = active_hold(conn, source_id)
        if hold is not None:
            raise RightsError(
                f"erasure of source {source_id} refused: it is under {hold.describe()}; "
                f"release it with `veil hold release {source_id} --reason ...` first")
        # Wait for a purge deleting this source's objects right now, then for publishing jobs.
        ledger_deletions.lock_deletion_tasks(conn, source_id)
        cancelled = jobs.cancel_source_jobs(conn, source_id, "cancelled: source erased")
        key_destroyed = keyring.destroy_key(conn, source_id, actor)
        objects = source_objects(conn, s3, settings, source_id)
        with ThreadPoolExecutor(max(1, min(8, len(objects)))) as pool:
            outcomes = list(pool.map(lambda o: _delete(s3, *o), objects))
        ledger_deletions.record_erased_objects(conn, source_id, outcomes, actor,
                                            _retry_at(settings))
        ledger_rights.drop_derived_rows(conn, source_id)
        erased_at = ledger_rights.tombstone_source(conn, source_id, TOMBSTONE_NAME)
        receipt = {
            "source_id": str(source_id),
            "erased_at": erased_at.isoformat(),
            "already_erased": source.erased_at is not None,
            "reason": reason,
            "actor": actor,
            "received_at": (received_at or erased_at).isoformat(),
            "jobs_cancelled": [str(j) for j in cancelled],
            "key_destroyed": key_destroyed,
            "objects": outcomes,
            "failed": [o for o in outcomes if o.get("error")],
            "exports_on_record": _exports(conn, source_id),
        }
        ledger.audit(conn, actor, AuditAction.ERASE, source_id=source_id, detail=receipt)
    return receipt


def _delete(s3: Minio, bucket: str, key: str) -> ObjectReceipt:
    try:
        versions = delete_versions(s3, bucket, key)
    except Exception as exc:
        return {"bucket": bucket, "key": key, "versions": [],
                "deleted_at": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"bucket": bucket, "key": key, "versions": versions,
            "deleted_at": datetime.now(UTC).isoformat()}


def _retry_at(settings: Settings) -> datetime:
    """When the purge first retries an object the erasure could not delete."""
    return datetime.now(UTC) + timedelta(seconds=backoff_s(
        1, settings.retention.retry_base_s, settings.retention.retry_max_s))


def _exports(conn: Conn, source_id: uuid.UUID) -> list[dict[str, Any]]:
    """Copies handed out before the erasure (exports, access requests): outside Veil's reach,
    listed so that whoever received them can be asked to delete them."""
    return [{"at": r["at"].isoformat(), "actor": r["actor"], "action": r["action"]}
            for r in ledger_rights.exports_on_record(conn, source_id)]


def carry_out(settings: Settings, request_id: uuid.UUID | str) -> list[dict[str, Any]] | None:
    """Erase what a recorded, pending request names (the retention worker's part).

    None when no such pending request exists: the task then does nothing. Each source is erased
    on its own; a refusal (legal hold, unknown source) is reported in its receipt.
    """
    try:
        request_uuid = uuid.UUID(str(request_id))
    except ValueError:
        log.warning("erase task with a malformed request id ignored")
        return None
    with db.connect(settings) as conn:
        request = ledger_rights.pending_erasure_request(conn, request_uuid)
    if request is None:
        log.warning("erase task for request %s ignored: no pending erasure request on record",
                    request_uuid)
        return None
    s3 = client_for("retention", settings)
    out: list[dict[str, Any]] = []
    for source_id in request.source_ids:
        try:
            out.append(erase_source(settings, source_id, request.reason, request.requested_by,
                                    s3, request.received_at))
        except RightsError as exc:
            out.append({"source_id": str(source_id), "refused": str(exc)})
    with db.transaction(settings) as conn:
        ledger_rights.finish_erasure_request(conn, request_uuid, out)
    return out
