"""The transactional outbox: a job's task is sent only after its rows are committed, and a relay
re-sends any outbox row that was not marked sent (a crash between commit and send, or a broker
that was down). Sending twice is harmless: job tasks are idempotent."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery

from infra import db
from infra.broker import send_job
from infra.db import Conn
from infra.settings import Settings

log = logging.getLogger(__name__)


def send_rows(app: Celery, settings: Settings, rows: Sequence[tuple[int, str, str]]) -> int:
    """Send (outbox id, task name, job id) rows and mark each sent; returns how many were sent.

    A send that fails leaves its row unsent for the relay; the error is logged with ids only.
    """
    sent: list[int] = []
    for outbox_id, task_name, job_id in rows:
        try:
            send_job(app, task_name, job_id)
        except Exception as exc:  # noqa: BLE001 - the relay retries every unsent row
            log.warning("outbox %s: send of job %s failed: %s", outbox_id, job_id, exc)
            continue
        sent.append(outbox_id)
    if sent:
        with db.transaction(settings) as conn:
            _mark_sent(conn, sent)
    return len(sent)


def _mark_sent(conn: Conn, outbox_ids: Sequence[int]) -> None:
    conn.execute("UPDATE outbox SET sent_at = now(), attempts = attempts + 1 WHERE id = ANY(%s)",
                 (list(outbox_ids),))


def relay(app: Celery, settings: Settings, older_than_s: int | None = None,
          limit: int = 500) -> int:
    """Re-send outbox rows still unsent after the grace period; SKIP LOCKED lets relays overlap."""
    grace = settings.limits.relay_grace_s if older_than_s is None else older_than_s
    with db.transaction(settings) as conn:
        rows = conn.execute(
            "SELECT o.id, o.task_name, o.job_id FROM outbox o JOIN jobs j ON j.id = o.job_id"
            " WHERE o.sent_at IS NULL AND o.created_at <= now() - make_interval(secs => %s)"
            " AND j.state IN ('queued', 'running')"
            " ORDER BY o.id LIMIT %s FOR UPDATE OF o SKIP LOCKED",
            (grace, limit),
        ).fetchall()
        batch = [(r["id"], r["task_name"], str(r["job_id"])) for r in rows]
        for _, task_name, job_id in batch:
            send_job(app, task_name, job_id)
        if batch:
            _mark_sent(conn, [outbox_id for outbox_id, _, _ in batch])
    return len(batch)


