"""Erasure (right to be forgotten, consent withdrawn): `veil erase SOURCE_ID... --reason TEXT`.

`veil erase` (the operator) only records an erasure request in PostgreSQL and sends its id to
the retention queue; the retention worker, the one process with delete rights, carries it out
(``workers.retention.erase``, where the steps of an erasure are written) and writes the
receipts on the request, which `veil erase` prints. ``--now`` carries the request out in the
calling process, which then needs the retention credentials (single-host installs, tests).

Running `veil erase` again on an erased source retries whatever is left (objects that failed to
delete are also retried by the purge, with backoff).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery

from infra import db
from infra.ledger_rights import ErasureRequest, erasure_receipts, record_erasure_request
from infra.settings import Settings
from schemas import messages
from workers.retention.erase import RightsError, carry_out


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
    request = ErasureRequest(uuid.uuid4(), source_ids, reason, actor, received_at)
    with db.transaction(settings) as conn:
        record_erasure_request(conn, request)
    return request.id


def wait_for_receipts(settings: Settings, request_id: uuid.UUID,
                      timeout_s: float) -> list[dict[str, Any]] | None:
    """Poll the request until the retention worker wrote its receipts (None on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with db.connect(settings) as conn:
            receipts = erasure_receipts(conn, request_id)
        if receipts is not None:
            return receipts
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
