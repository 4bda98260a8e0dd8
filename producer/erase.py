"""Erasure (right to be forgotten, consent withdrawn): `veil erase SOURCE_ID... --reason TEXT`.

`veil erase` (the operator) only records an erasure request in PostgreSQL and sends its id to
the retention queue; the retention worker, the one process with delete rights, carries it out
(:func:`carry_out`) and writes the receipts on the request, which `veil erase` prints. An erase
task whose id names no pending request does nothing: a task sent by hand (through Flower) with
made-up ids erases nothing. ``--now`` carries the request out in the calling process, which then
needs the retention credentials (single-host installs, tests).

One transaction per source:

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
error, and the purge retries it with backoff; the receipt lists it and the command exits 1.
Running `veil erase` again on an erased source retries whatever is left.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from minio import Minio
from psycopg.types.json import Jsonb

from infra import db, jobs, keyring, ledger
from infra.db import Conn
from infra.objectstore import client_for, delete_versions
from infra.settings import Settings
from producer.holds import RightsError, active_hold, lock_source, source_objects
from schemas import messages
from schemas.backoff import backoff_s
from schemas.enums import AuditAction

log = logging.getLogger(__name__)
TOMBSTONE_NAME = "erased"


def erase_source(settings: Settings, source_id: uuid.UUID, reason: str, actor: str,
                 s3: Minio | None = None, received_at: datetime | None = None) -> dict[str, Any]:
    """Erase one source and everything derived from it; returns the receipt. ``received_at``
    (when the request came in) goes into the receipt for the response times of `veil report`."""
    if not reason.strip():
        raise RightsError(f"source {source_id}: an erasure needs a --reason")
    s3 = s3 or client_for("retention", settings)
    with db.transaction(settings) as conn:
        source = lock_source(conn, source_id)
        hold = active_hold(conn, source_id)
        if hold is not None:
            raise RightsError(
                f"erasure of source {source_id} refused: it is under {hold.describe()}; "
                f"release it with `veil hold release {source_id} --reason ...` first")
        # Wait for a purge deleting this source's objects right now, then for publishing jobs.
        conn.execute("SELECT id FROM deletion_tasks WHERE source_id = %s FOR UPDATE",
                     (source_id,))
        cancelled = jobs.cancel_source_jobs(conn, source_id, "cancelled: source erased")
        key_destroyed = keyring.destroy_key(conn, source_id, actor)
        objects = source_objects(conn, s3, settings, source_id)
        with ThreadPoolExecutor(max(1, min(8, len(objects)))) as pool:
            outcomes = list(pool.map(lambda o: _delete(s3, *o), objects))
        receipts = _record_objects(conn, settings, source_id, outcomes, actor)
        conn.execute("DELETE FROM detections WHERE job_id IN"
                     " (SELECT id FROM jobs WHERE source_id = %s)", (source_id,))
        # A review note is free text about the footage: it goes with the personal data.
        conn.execute("DELETE FROM reviews WHERE source_id = %s", (source_id,))
        erased_at = conn.execute(
            "UPDATE sources SET erased_at = coalesce(erased_at, now()), original_name = %s,"
            " camera = NULL, captured_at = NULL WHERE id = %s RETURNING erased_at",
            (TOMBSTONE_NAME, source_id)).fetchone()["erased_at"]  # type: ignore[index]
        receipt = {
            "source_id": str(source_id),
            "erased_at": erased_at.isoformat(),
            "already_erased": source["erased_at"] is not None,
            "reason": reason,
            "actor": actor,
            "received_at": (received_at or erased_at).isoformat(),
            "jobs_cancelled": [str(j) for j in cancelled],
            "key_destroyed": key_destroyed,
            "objects": receipts,
            "failed": [r for r in receipts if r.get("error")],
            "exports_on_record": _exports(conn, source_id),
        }
        ledger.audit(conn, actor, AuditAction.ERASE, source_id=source_id, detail=receipt)
    return receipt


def _delete(s3: Minio, bucket: str, key: str) -> dict[str, Any]:
    try:
        versions = delete_versions(s3, bucket, key)
    except Exception as exc:
        return {"bucket": bucket, "key": key, "versions": [],
                "deleted_at": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"bucket": bucket, "key": key, "versions": versions,
            "deleted_at": datetime.now(UTC).isoformat()}


def _record_objects(conn: Conn, settings: Settings, source_id: uuid.UUID,
                    outcomes: list[dict[str, Any]], actor: str) -> list[dict[str, Any]]:
    """One deletion task per object, done with its receipt, or due now to be retried."""
    retry_at = datetime.now(UTC) + timedelta(seconds=backoff_s(
        1, settings.retention.retry_base_s, settings.retention.retry_max_s))
    for o in outcomes:
        if o.get("error"):
            conn.execute(
                "INSERT INTO deletion_tasks (source_id, bucket, key, due_at, reason, attempts,"
                " last_error, next_attempt_at) VALUES (%s, %s, %s, now(), %s, 1, %s, %s)"
                " ON CONFLICT (bucket, key) DO UPDATE SET state = 'pending', due_at = now(),"
                " reason = EXCLUDED.reason, attempts = deletion_tasks.attempts + 1,"
                " last_error = EXCLUDED.last_error, next_attempt_at = EXCLUDED.next_attempt_at",
                (source_id, o["bucket"], o["key"], "erasure", o["error"][:2000], retry_at))
            continue
        receipt = {**o, "source_id": str(source_id), "erased_by": actor}
        conn.execute(
            "INSERT INTO deletion_tasks (source_id, bucket, key, due_at, reason, state, attempts,"
            " done_at, receipt, claimed_by) VALUES (%s, %s, %s, now(), 'erasure', 'done', 1, %s,"
            " %s, %s) ON CONFLICT (bucket, key) DO UPDATE SET state = 'done',"
            " done_at = EXCLUDED.done_at, receipt = EXCLUDED.receipt, last_error = NULL,"
            " next_attempt_at = NULL, claimed_by = EXCLUDED.claimed_by,"
            " reason = deletion_tasks.reason || '; erased'"
            # an earlier purge's receipt stays when nothing was left to delete
            " WHERE deletion_tasks.state <> 'done' OR %s",
            (source_id, o["bucket"], o["key"], datetime.fromisoformat(o["deleted_at"]),
             Jsonb(receipt), actor, bool(o["versions"])))
    return outcomes


def _exports(conn: Conn, source_id: uuid.UUID) -> list[dict[str, Any]]:
    """Copies handed out before the erasure (exports, access requests): outside Veil's reach,
    listed so that whoever received them can be asked to delete them."""
    return [{"at": r["at"].isoformat(), "actor": r["actor"], "action": r["action"]}
            for r in conn.execute(
                "SELECT at, actor, action FROM audit_events WHERE source_id = %s"
                " AND action IN ('export', 'dsar_export') ORDER BY at", (source_id,))]


class ErasurePending(Exception):
    """The request is recorded but no retention worker carried it out in time."""

    def __init__(self, request_id: uuid.UUID, timeout_s: float) -> None:
        super().__init__(f"erasure request {request_id} recorded, but no retention worker "
                         f"answered within {timeout_s:g} s; it runs when one does "
                         "(`veil worker --retention`)")
        self.request_id = request_id


def request_erasure(settings: Settings, source_ids: list[uuid.UUID], reason: str,
                    actor: str, received_at: datetime | None = None) -> uuid.UUID:
    """Record an erasure request (the operator's part); returns its id, the task's argument."""
    if not reason.strip():
        raise RightsError("an erasure needs a --reason")
    request_id = uuid.uuid4()
    with db.transaction(settings) as conn:
        conn.execute("INSERT INTO erasure_requests (id, source_ids, reason, requested_by,"
                     " received_at) VALUES (%s, %s, %s, %s, %s)",
                     (request_id, source_ids, reason, actor, received_at))
    return request_id


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
        request = conn.execute(
            "SELECT source_ids, reason, requested_by, received_at FROM erasure_requests"
            " WHERE id = %s AND state = 'pending'", (request_uuid,)).fetchone()
    if request is None:
        log.warning("erase task for request %s ignored: no pending erasure request on record",
                    request_uuid)
        return None
    s3 = client_for("retention", settings)
    out: list[dict[str, Any]] = []
    for source_id in request["source_ids"]:
        try:
            out.append(erase_source(settings, source_id, request["reason"],
                                    request["requested_by"], s3, request["received_at"]))
        except RightsError as exc:
            out.append({"source_id": str(source_id), "refused": str(exc)})
    with db.transaction(settings) as conn:
        conn.execute("UPDATE erasure_requests SET state = 'done', done_at = now(), receipts = %s"
                     " WHERE id = %s", (Jsonb(out), request_uuid))
    return out


def wait_for_receipts(settings: Settings, request_id: uuid.UUID,
                      timeout_s: float) -> list[dict[str, Any]] | None:
    """Poll the request until the retention worker wrote its receipts (None on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with db.connect(settings) as conn:
            row = conn.execute("SELECT state, receipts FROM erasure_requests WHERE id = %s",
                               (request_id,)).fetchone()
        if row is not None and row["state"] == "done":
            return list(row["receipts"])
        if time.monotonic() > deadline:
            return None
        time.sleep(0.3)


@dataclass(frozen=True)
class EraseRun:
    """Where an erasure request is carried out: here (``now``, as the retention role), or by
    the retention worker through ``app`` (made from the settings when None), waiting up to
    ``timeout_s`` for its receipts."""

    now: bool = True
    app: Celery | None = None
    timeout_s: float = 120.0


def erase(settings: Settings, source_ids: list[uuid.UUID], reason: str, actor: str,
          received_at: datetime | None = None,
          run: EraseRun | None = None) -> list[dict[str, Any]]:
    """Record the request, then carry it out here (``now``, as the retention role) or hand it
    to the retention worker and wait for its receipts (:class:`ErasurePending` on timeout)."""
    run = run or EraseRun()
    now, app, timeout_s = run.now, run.app, run.timeout_s
    request_id = request_erasure(settings, source_ids, reason, actor, received_at)
    if now:
        return carry_out(settings.for_db_role("retention"), request_id) or []
    if app is None:
        from infra.broker import make_celery
        app = make_celery(settings, name="veil-producer")
    app.send_task(messages.ERASE, args=[str(request_id)])
    receipts = wait_for_receipts(settings, request_id, timeout_s)
    if receipts is None:
        raise ErasurePending(request_id, timeout_s)
    return receipts
