"""`veil retry`: re-queue failed jobs on an operator's word, audited.

Ingesting the same bytes again only reports a duplicate, so this is how a job that failed on a
fixed cause (a worker bug, a service down for longer than the retries) runs again. The ledger
decides what may be retried (``infra.jobs.retry_failed_jobs``); the tasks are sent after the
commit through the outbox, so a lost send is re-sent by the relay.
"""

from __future__ import annotations

import uuid

from celery import Celery

from infra import db, jobs, outbox
from infra.settings import Settings


def retry_jobs(settings: Settings, app: Celery, job_ids: list[uuid.UUID] | None,
               actor: str) -> list[jobs.RetryOutcome]:
    """Re-queue ``job_ids`` (or every failed job when None); one outcome per job considered."""
    with db.transaction(settings) as conn:
        outcomes, rows = jobs.retry_failed_jobs(conn, job_ids, actor)
    outbox.send_rows(app, settings, rows)
    return outcomes
