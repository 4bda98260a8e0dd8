"""The transactional outbox: a job's task is sent only after its rows are committed, and a relay
re-sends any outbox row that was not marked sent (a crash between commit and send, or a broker
that was down). Sending twice is harmless: job tasks are idempotent.

Several images per message when the queue is deep: when the images queue already holds
``limits.images_batch_depth`` messages or more, the image rows of one send go up to
``limits.images_per_task`` job ids a ``REDACT_IMAGES`` message, and a worker runs them one after
another (``workers.job_task.JobTask.run_jobs``). Each row is still one job with its own claim,
lease, retries and record; only the broker's work (the message, its ack, Flower's events) is
shared. A shallow queue gets one image a message, so idle children all start at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from celery import Celery

from infra import db
from infra.broker import QUEUE_IMAGES, queue_depth, send_jobs
from infra.db import Conn
from infra.settings import Settings
from schemas import messages

log = logging.getLogger(__name__)


Row = tuple[int, str, str]  # (outbox id, task name, job id)


@dataclass(frozen=True)
class Message:
    """One message to send: a task and its jobs, with the outbox rows it marks sent."""

    task_name: str
    outbox_ids: list[int]
    job_ids: list[str]


def plan_messages(rows: Sequence[Row], images_per_message: int) -> list[Message]:
    """The messages for ``rows``, in order: image jobs ``images_per_message`` to a message (the
    last one takes the rest), every other job alone."""
    messages_: list[Message] = []
    images: list[Row] = []
    for row in rows:
        if row[1] == messages.REDACT_IMAGE and images_per_message > 1:
            images.append(row)
        else:
            messages_.append(Message(row[1], [row[0]], [row[2]]))
    for start in range(0, len(images), images_per_message):
        group = images[start:start + images_per_message]
        task = messages.REDACT_IMAGES if len(group) > 1 else messages.REDACT_IMAGE
        messages_.append(Message(task, [r[0] for r in group], [r[2] for r in group]))
    return messages_


def images_per_message(app: Celery, settings: Settings, rows: Sequence[Row]) -> int:
    """``limits.images_per_task`` when the images queue is deep enough and ``rows`` hold two
    images or more, else 1 (the depth is read only then: one Redis call a send)."""
    limits = settings.limits
    if limits.images_per_task == 1 or sum(r[1] == messages.REDACT_IMAGE for r in rows) < 2:
        return 1
    deep = queue_depth(app, settings, QUEUE_IMAGES) >= limits.images_batch_depth
    return limits.images_per_task if deep else 1


def send_rows(app: Celery, settings: Settings, rows: Sequence[Row]) -> int:
    """Send (outbox id, task name, job id) rows and mark each sent; returns how many were sent.

    A send that fails leaves its rows unsent for the relay; the error is logged with ids only.
    """
    sent: list[int] = []
    try:
        per_message = images_per_message(app, settings, rows)
    except Exception as exc:  # noqa: BLE001 - the broker is down: the sends below fail too
        log.warning("outbox: could not read the images queue's depth: %s", exc)
        per_message = 1
    for message in plan_messages(rows, per_message):
        try:
            send_jobs(app, message.task_name, message.job_ids)
        except Exception as exc:  # noqa: BLE001 - the relay retries every unsent row
            log.warning("outbox %s: send of jobs %s failed: %s", message.outbox_ids,
                        message.job_ids, exc)
            continue
        sent.extend(message.outbox_ids)
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
        for message in plan_messages(batch, images_per_message(app, settings, batch)):
            send_jobs(app, message.task_name, message.job_ids)
        if batch:
            _mark_sent(conn, [outbox_id for outbox_id, _, _ in batch])
    return len(batch)


