"""Celery tasks of the retention worker: the scheduled purge and erasure requests.

They run on the ``retention`` queue, which only ``veil worker --retention`` consumes: the one
process holding delete credentials (PostgreSQL ``veil_retention``, S3 role ``retention``). The
purge also deletes inbox uploads once ingested (their deletion tasks are due at once).

Beat sends the purge every ``retention.purge_interval_s`` with an expiry of one interval, so a
backlog of ticks (workers down for an hour) collapses into one run. Overlapping runs are safe:
batches are claimed with FOR UPDATE SKIP LOCKED. An erase task carries only the id of a request
that `veil erase` recorded; with any other id it does nothing.
"""

from __future__ import annotations

from typing import Any

from infra.settings import get_settings
from schemas import messages
from workers.app import app
from workers.retention.erase import carry_out
from workers.retention.purge import purge_due


@app.task(name=messages.PURGE, ignore_result=True)
def purge() -> dict[str, Any]:
    return purge_due(get_settings()).as_dict()


@app.task(name=messages.ERASE, ignore_result=True)
def erase(request_id: str) -> dict[str, Any]:
    receipts = carry_out(get_settings(), request_id)
    return {"request_id": request_id, "carried_out": receipts is not None,
            "sources": len(receipts or [])}
