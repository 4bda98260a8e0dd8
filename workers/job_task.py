"""The base class of the job tasks (image, chunk, assembly): the retry policy in one place.

Celery's counterpart of Dramatiq's retry middleware. Every job task loads the settings, names
its worker, and runs its body under :func:`workers.reliability.run_guarded` (lease heartbeat,
permanent failures failed at once, transient ones retried with backoff, then dead-lettered);
a task states only its body. ``max_retries`` is None because the policy, not Celery, decides
when to give up (``limits.max_attempts`` per cause).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task

from infra.settings import Settings, get_settings
from workers import runtime
from workers.reliability import run_guarded

JobBody = Callable[[Settings, str], Any]  # (settings, actor) -> the job's result


class JobTask(Task):
    """A bound job task: ``self.run_job(job_id, body)`` runs ``body`` under the retry policy."""

    max_retries = None

    def run_job(self, job_id: str, body: JobBody) -> Any:
        """Run one attempt of job ``job_id``; returns the body's result or ``"failed"``."""
        settings = get_settings()
        actor = runtime.worker_identity()
        return run_guarded(self, settings, job_id, actor, lambda: body(settings, actor))
