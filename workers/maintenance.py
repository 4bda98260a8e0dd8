"""The sweeper: PostgreSQL is the truth, so a job whose worker died (lease expired) or whose
message was lost (queued far too long, e.g. Redis restarted without persistence) is re-queued
through the outbox. A job past ``limits.max_attempts`` fails with a reason instead of looping."""

from __future__ import annotations

from celery import Celery

from infra import db, outbox
from infra.settings import Settings
from schemas import messages


def sweep(app: Celery, settings: Settings) -> dict[str, int]:
    limits = settings.limits
    with db.transaction(settings) as conn:
        gave_up = conn.execute(
            "UPDATE jobs SET state = 'failed', finished_at = now(), updated_at = now(),"
            " error = 'gave up after ' || attempts || ' attempts: the worker was lost each time'"
            " WHERE state = 'running' AND lease_expires_at < now() AND attempts >= %s"
            " RETURNING id",
            (limits.max_attempts,),
        ).fetchall()
        stale = conn.execute(
            "UPDATE jobs SET state = 'queued', lease_expires_at = NULL, enqueued_at = now(),"
            " updated_at = now() WHERE (state = 'running' AND lease_expires_at < now())"
            " OR (state = 'queued' AND enqueued_at < now() - make_interval(secs => %s))"
            " RETURNING id, kind",
            (limits.requeue_after_s,),
        ).fetchall()
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO outbox (job_id, task_name, created_at)"
                " VALUES (%s, %s, now() - interval '1 day')",
                [(r["id"], messages.TASK_FOR_JOB_KIND[r["kind"]]) for r in stale],
            )
    sent = outbox.relay(app, settings, older_than_s=0) if stale else 0
    return {"requeued": len(stale), "gave_up": len(gave_up), "sent": sent}
