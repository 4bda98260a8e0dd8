"""Celery tasks for video: chunk redaction and assembly (thin wrappers over workers.video_job).

Arguments are job ids only (invariant 5). A chunk task reports its progress, frames done of
the chunk's total, both to the result backend (``update_state``, for ``AsyncResult.info``) and
as a ``task-progress`` event, which Flower merges into the task it shows.
"""

from __future__ import annotations

from typing import Any

from infra import outbox
from schemas import messages
from workers import runtime
from workers.app import app
from workers.job_task import JobTask
from workers.video_job import ChunkRun, process_assemble_job, process_chunk_job


@app.task(name=messages.REDACT_CHUNK, bind=True, base=JobTask)
def redact_chunk(self: JobTask, job_id: str) -> Any:
    def progress(done: int, total: int) -> None:
        meta = {"job_id": job_id, "frames_done": done, "frames_total": total}
        self.update_state(state="PROGRESS", meta=meta)
        # Flower lists a task's standard fields only: the progress goes in ``result`` too,
        # until the task's own result replaces it.
        self.send_event("task-progress", result=f"{done}/{total} frames", **meta)

    return self.run_job(job_id, lambda settings, actor: process_chunk_job(
        job_id, settings, runtime.detector(), actor, ChunkRun(
            runtime.storage(), progress=progress,
            send=lambda rows: outbox.send_rows(app, settings, rows),
            threads=settings.models.intra_op_threads)))


@app.task(name=messages.ASSEMBLE_VIDEO, bind=True, base=JobTask)
def assemble_video(self: JobTask, job_id: str) -> Any:
    return self.run_job(job_id, lambda settings, actor: process_assemble_job(
        job_id, settings, actor, runtime.storage()))
