"""Celery tasks: thin wrappers that load ids and call plain functions (STYLE habit 1).

Arguments are job ids only, so Flower, Redis and logs never see file names or pixels.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from celery.signals import celeryd_after_setup

from infra import outbox
from infra.settings import Settings, get_settings, reset_settings_cache
from schemas import messages
from workers import maintenance, runtime
from workers.app import app
from workers.image_job import process_image_job
from workers.job_task import JobTask
from workers.retention import reconcile


def _image_job(job_id: str, settings: Settings, actor: str) -> Any:
    return process_image_job(job_id, settings, runtime.detector(), actor, runtime.storage())


@app.task(name=messages.REDACT_IMAGE, bind=True, base=JobTask)
def redact_image(self: JobTask, job_id: str) -> Any:
    return self.run_job(job_id, partial(_image_job, job_id))


@app.task(name=messages.REDACT_IMAGES, bind=True, base=JobTask)
def redact_images(self: JobTask, *job_ids: str) -> list[Any]:
    return self.run_jobs(job_ids, _image_job)


@celeryd_after_setup.connect
def _share_cores(sender: str, instance: Any, **kwargs: Any) -> None:
    """Unless configured, give each pool child its share of the cores for onnxruntime."""
    if "VEIL_MODELS__INTRA_OP_THREADS" not in os.environ:
        threads = runtime.threads_per_child(int(getattr(instance, "concurrency", 1) or 1))
        os.environ["VEIL_MODELS__INTRA_OP_THREADS"] = str(threads)
        reset_settings_cache()


@app.task(name=messages.RELAY_OUTBOX, ignore_result=True)
def relay_outbox() -> int:
    return outbox.relay(app, get_settings())


@app.task(name=messages.SWEEP_LEASES, ignore_result=True)
def sweep_leases() -> dict[str, int]:
    return maintenance.sweep(app, get_settings())


@app.task(name=messages.RECONCILE_OBJECTS, ignore_result=True)
def reconcile_objects() -> dict[str, object]:
    return reconcile.reconcile(get_settings()).as_dict()
