"""The base class of the job tasks (image, chunk, assembly): the retry policy in one place.

Celery's counterpart of Dramatiq's retry middleware. Every job task loads the settings, names
its worker, and runs its body under :func:`workers.reliability.run_guarded` (lease heartbeat,
permanent failures failed at once, transient ones retried with backoff, then dead-lettered);
a task states only its body. ``max_retries`` is None because the policy, not Celery, decides
when to give up (``limits.max_attempts`` per cause). A batch task (several image jobs in one
message, ``infra.outbox``) runs each job the same way with :meth:`JobTask.run_jobs`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from celery import Task

from infra.settings import Settings, get_settings
from workers import runtime
from workers.reliability import run_batch, run_guarded

JobBody = Callable[[Settings, str], Any]  # (settings, actor) -> the job's result
BatchBody = Callable[[str, Settings, str], Any]  # (job id, settings, actor) -> one job's result


class JobTask(Task):
    """A bound job task: ``self.run_job(job_id, body)`` runs ``body`` under the retry policy."""

    max_retries = None

    def run_job(self, job_id: str, body: JobBody) -> Any:
        """Run one attempt of job ``job_id``; returns the body's result or ``"failed"``."""
        settings = get_settings()
        actor = runtime.worker_identity()
        return run_guarded(self, settings, job_id, actor, lambda: body(settings, actor))

    def run_jobs(self, job_ids: Sequence[str], body: BatchBody) -> list[Any]:
        """Run the jobs of one message one after another (``run_batch``); returns each job's
        result."""
        settings = get_settings()
        actor = runtime.worker_identity()
        return run_batch(self, settings, actor, job_ids,
                         lambda job_id: body(job_id, settings, actor))
