"""The sweeper: PostgreSQL is the truth, so a job whose worker died (lease expired) or whose
message was lost (queued far too long, e.g. Redis restarted without persistence) is re-queued
through the outbox. A job that used ``limits.max_attempts`` fails with a reason naming what
ended each attempt, instead of looping.

Beat runs it every ``limits.sweep_interval_s``; a running job's lease is renewed by heartbeat
(``workers.lease``), so a lost worker's job is re-queued within ``job_lease_s +
sweep_interval_s`` of the loss (``LimitSettings.lost_worker_requeue_bound_s``)."""

from __future__ import annotations

import os
import socket

from celery import Celery

from infra import db, jobs, outbox
from infra.settings import Settings


def sweeper_identity() -> str:
    return f"sweeper@{socket.gethostname()}:{os.getpid()}"


def sweep(app: Celery, settings: Settings) -> dict[str, int]:
    limits = settings.limits
    with db.transaction(settings) as conn:
        result = jobs.sweep_expired(conn, limits.max_attempts, limits.requeue_after_s,
                                    sweeper_identity())
    sent = outbox.send_rows(app, settings, result.requeued) if result.requeued else 0
    return {"requeued": len(result.requeued), "gave_up": len(result.gave_up), "sent": sent}
