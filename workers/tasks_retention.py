"""Celery tasks for retention: the scheduled purge (a thin wrapper over the purge function).

Beat sends it every ``retention.purge_interval_s`` to the maintenance queue, with an expiry of
one interval so that a backlog of ticks (workers down for an hour) collapses into one run.
Overlapping runs are safe: batches are claimed with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

from typing import Any

from infra.purge import purge_due
from infra.settings import get_settings
from schemas import messages
from workers.app import app


@app.task(name=messages.PURGE, ignore_result=True)
def purge() -> dict[str, Any]:
    return purge_due(get_settings()).as_dict()
