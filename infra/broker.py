"""Celery configuration, derived from settings in this one place (STYLE habit 2).

Reliability choices, each pinned by a test:
- ``task_acks_late`` with ``task_reject_on_worker_lost``: a task is acknowledged only when it
  finished, so a SIGKILLed worker's task goes back to the queue instead of vanishing.
- ``worker_prefetch_multiplier = 1``: a worker holds one task at a time, so a slow image does not
  hide others behind it and a crash loses at most one in-flight delivery.
- Redis ``visibility_timeout`` above the hard time limit: otherwise Redis re-delivers a task that
  is still legitimately running and two workers race on it.
- Task events on (``worker_send_task_events``, ``task_send_sent_event``) so Flower sees tasks.
- ``worker_max_memory_per_child`` at the image memory bound (``limits.worker_max_memory_mb``):
  a child that grew past it is replaced after its task, never in the middle of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from celery import Celery

from infra.settings import Settings, get_settings
from schemas import messages

# One queue per workload, so a node consumes what its hardware is good at (`veil worker
# --queues`): images on CPU nodes, video chunks on GPU nodes where there are any, assembly (a
# stream copy) anywhere.
QUEUE_IMAGES = "images"
QUEUE_CHUNKS = "chunks"
QUEUE_ASSEMBLY = "assembly"
QUEUE_MAINTENANCE = "maintenance"
JOB_QUEUES = (QUEUE_IMAGES, QUEUE_CHUNKS, QUEUE_ASSEMBLY)
# Purge, erasure and inbox clean-up: consumed only by the retention worker, the one process that
# holds delete credentials (docs/security.md).
QUEUE_RETENTION = "retention"
# What `veil worker` consumes unless told otherwise: every job workload and maintenance.
WORKER_QUEUES = (*JOB_QUEUES, QUEUE_MAINTENANCE)


def queue_name(settings: Settings, queue: str) -> str:
    return f"{settings.broker.queue_prefix}.{queue}"


def celery_config(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or get_settings()
    limits = settings.limits
    maint_q = queue_name(settings, QUEUE_MAINTENANCE)
    retention_q = queue_name(settings, QUEUE_RETENTION)
    return {
        "broker_url": settings.broker.url,
        "result_backend": settings.broker.result_url,
        "result_expires": 3600,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        # KiB. A pool child above the image memory bound after a task is replaced, so that one
        # large image does not leave gigabytes held for the next hours (docs/limits.md).
        "worker_max_memory_per_child": limits.worker_max_memory_mb * 1024,
        "task_time_limit": limits.task_hard_time_limit_s,
        "task_soft_time_limit": limits.task_soft_time_limit_s,
        "broker_transport_options": {
            "visibility_timeout": limits.visibility_timeout_s,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
            "retry_on_timeout": True,
        },
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "worker_hijack_root_logger": False,
        "task_default_queue": maint_q,
        "task_routes": {
            messages.REDACT_IMAGE: {"queue": queue_name(settings, QUEUE_IMAGES)},
            messages.REDACT_IMAGES: {"queue": queue_name(settings, QUEUE_IMAGES)},
            messages.REDACT_CHUNK: {"queue": queue_name(settings, QUEUE_CHUNKS)},
            messages.ASSEMBLE_VIDEO: {"queue": queue_name(settings, QUEUE_ASSEMBLY)},
            messages.RELAY_OUTBOX: {"queue": maint_q},
            messages.SWEEP_LEASES: {"queue": maint_q},
            messages.PURGE: {"queue": retention_q},
            messages.ERASE: {"queue": retention_q},
            # The reconciler deletes objects no ledger row knows: only the retention worker can.
            messages.RECONCILE_OBJECTS: {"queue": retention_q},
        },
        "beat_schedule": {
            "relay-outbox": {"task": messages.RELAY_OUTBOX, "schedule": timedelta(seconds=10)},
            # The lease sweeper is not here: it runs in beat's own thread every
            # limits.sweep_interval_s (workers/app.py), so busy pool slots cannot delay it.
            "reconcile-objects": {"task": messages.RECONCILE_OBJECTS,
                                  "schedule": timedelta(seconds=limits.reconcile_interval_s),
                                  "options": {"expires": limits.reconcile_interval_s}},
            # Expires after one interval: ticks missed while workers were down collapse into one.
            "purge": {"task": messages.PURGE,
                      "schedule": timedelta(seconds=settings.retention.purge_interval_s),
                      "options": {"expires": settings.retention.purge_interval_s}},
        },
        "timezone": "UTC",
    }


def make_celery(settings: Settings | None = None, name: str = "veil") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


def send_jobs(app: Celery, task_name: str, job_ids: Sequence[str]) -> None:
    """Send a job task by name (the producer never imports the workers): one job id, or
    several for ``REDACT_IMAGES``. Ids only."""
    app.send_task(task_name, args=messages.job_batch_args(list(job_ids)))


def queue_depth(app: Celery, settings: Settings, queue: str) -> int:
    """Messages waiting in one workload's queue (a Redis list; running tasks are not in it)."""
    with app.pool.acquire(block=True) as conn:
        return int(conn.default_channel.client.llen(queue_name(settings, queue)))
