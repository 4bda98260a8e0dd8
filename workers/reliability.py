"""Retries, permanent failures and dead letters for job tasks, in one place.

Errors fall in three groups:
- permanent (bad input, a missing or tampered raw object): the job fails at once with a reason a
  person can read; the original stays in `raw` until its deadline (invariants 1 and 7);
- transient (Redis, PostgreSQL or S3 unreachable, S3 5xx): retried with exponential backoff and
  jitter up to ``limits.max_attempts``, then failed and written to `dead_letters`;
- anything else is a defect: retried once more in case it was the environment, then failed.

Each retry counts its cause on the job (``transient`` or ``error``; the sweeper counts
``worker_lost``), and the give-up reason names every cause with its count (``infra.jobs``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import psycopg
import redis.exceptions
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from infra import db, jobs, ledger
from infra.jobs import DeadLetter
from infra.keyring import KeyDestroyedError, RawIntegrityError
from infra.objectstore import is_transient
from infra.settings import Settings
from schemas.backoff import backoff_s
from workers.imageio import BadInputError
from workers.lease import LeaseHeartbeat

log = logging.getLogger(__name__)

# A job task's first retry waits up to 2 s, doubling per retry to limits.retry_backoff_max_s.
TASK_BACKOFF_BASE_S = 2.0

UNKNOWN_ERROR_RETRIES = 1


class PermanentJobError(Exception):
    """A failure that no retry can fix; its message is shown to the operator."""


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, BadInputError | PermanentJobError | KeyDestroyedError
                      | RawIntegrityError)


def is_transient_error(exc: BaseException) -> bool:
    if isinstance(exc, psycopg.OperationalError | redis.exceptions.ConnectionError):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return is_transient(exc)


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or exc.__class__.__name__
    return text if is_permanent(exc) else f"{exc.__class__.__name__}: {text}"


def dead_letter(settings: Settings, letter: DeadLetter, actor: str) -> None:
    """Fail the job and keep a dead letter (``infra.jobs.dead_letter``); with ``cause`` (the
    last attempt's), the reason becomes the give-up reason naming every attempt's cause with
    its count."""
    with db.transaction(settings) as conn:
        jobs.dead_letter(conn, letter, actor)


def _count_retry(settings: Settings, job_id: str, cause: str) -> None:
    """Record why this attempt ends in a retry; best effort: when PostgreSQL itself is the
    transient error this fails, and the retry's claim counts it as a re-delivery instead."""
    try:
        with db.transaction(settings) as conn:
            jobs.requeue_for_retry(conn, job_id, cause)
    except Exception as exc:  # noqa: BLE001 - the retry goes ahead either way
        log.warning("job %s: could not record the retry's cause (%s): %s", job_id, cause, exc)


def run_guarded(task: Task, settings: Settings, job_id: str, actor: str,
                body: Callable[[], Any], in_batch: bool = False) -> Any:
    """Run a job body under the retry policy, its lease renewed by heartbeat meanwhile; returns
    the body's result or ``"failed"``.

    ``in_batch``: the job is one of several in its message, so a retry re-sends this job alone
    (a new message, its retry count one up) and returns ``"retrying"``; the message's other
    jobs go on. Otherwise the retry re-sends the message and raises, as Celery retries do."""
    retries = int(task.request.retries or 0)
    try:
        with LeaseHeartbeat(settings, job_id, actor):
            return body()
    except SoftTimeLimitExceeded:
        reason = (f"job {job_id} exceeded the time limit of "
                  f"{settings.limits.task_soft_time_limit_s} s")
        dead_letter(settings, DeadLetter(job_id, task.name, reason, retries + 1), actor)
        return "failed"
    except Exception as exc:
        reason = describe(exc)
        if is_permanent(exc):
            log.info("job %s failed permanently: %s", job_id, reason)
            with db.transaction(settings) as conn:
                ledger.fail_job(conn, job_id, reason, actor)
            return "failed"
        transient = is_transient_error(exc)
        cause = "transient" if transient else "error"
        allowed = settings.limits.max_attempts - 1 if transient else UNKNOWN_ERROR_RETRIES
        if retries >= allowed:
            log.warning("job %s gave up after %d retries: %s", job_id, retries, reason)
            dead_letter(settings, DeadLetter(job_id, task.name, reason, retries + 1, cause),
                        actor)
            return "failed"
        log.warning("job %s attempt %d failed, retrying: %s", job_id, retries + 1, reason)
        _count_retry(settings, job_id, cause)
        wait = backoff_s(retries + 1, TASK_BACKOFF_BASE_S, settings.limits.retry_backoff_max_s,
                         jitter=True)
        if in_batch:
            task.retry(args=[job_id], exc=exc, countdown=wait, max_retries=allowed, throw=False)
            return "retrying"
        raise task.retry(exc=exc, countdown=wait, max_retries=allowed) from exc


def run_batch(task: Task, settings: Settings, actor: str, job_ids: Sequence[str],
              body: Callable[[str], Any]) -> list[Any]:
    """Run the jobs of one message one after another, each under the retry policy on its own
    (a permanent failure fails that job, a transient one re-sends that job alone; the others go
    on), and return each job's result.

    The time limits are the message's: once half the soft limit has passed, the jobs not yet
    started are re-sent as a new message (no retry counted) and this one ends, so a batch of
    large images never reaches the hard limit with jobs left unrun.
    """
    started = time.monotonic()
    outcomes: list[Any] = []
    for done, job_id in enumerate(job_ids):
        elapsed = time.monotonic() - started
        if done and elapsed >= settings.limits.task_soft_time_limit_s / 2:
            rest = list(job_ids[done:])
            log.info("batch %s: %d jobs re-sent after %.0f s", task.request.id, len(rest), elapsed)
            task.app.send_task(task.name, args=rest)
            return [*outcomes, *(["re-sent"] * len(rest))]
        outcomes.append(run_guarded(task, settings, job_id, actor, partial(body, job_id),
                                    in_batch=len(job_ids) > 1))
    return outcomes
