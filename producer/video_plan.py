"""Video at ingest: probe the container, plan chunks, write the chunk and assemble jobs.

Called from ``producer.ingest._record`` inside the source's own transaction, so a video's
source row, its probe, every chunk job, the assemble job and the outbox rows commit together or
not at all. Probing happens before that transaction (:func:`plan_video`), on bytes the producer
already holds.

The assemble job is written with the chunks but not enqueued (``enqueued_at`` NULL, no outbox
row): the last chunk to finish enqueues it (``ledger.enqueue_assembly_if_last``), and until then
the lease sweeper leaves it alone. A video that cannot be probed (no video stream, no frames,
frames over the pixel limit, not a container at all) becomes a source with one failed chunk job
that says why: the user sees the failure at once and nothing is queued.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from fractions import Fraction

from infra import jobs, ledger, ledger_sources
from infra.db import Conn
from infra.settings import Settings
from infra.video_probe import ProbeError, VideoInfo, VideoSource, probe_video
from producer.chunk_plan import chunk_seconds_for, plan_chunks
from schemas.chunks import ChunkPlan
from schemas.enums import AuditAction, JobKind
from schemas.keys import job_id_for
from schemas.policy import Policy


@dataclass(frozen=True)
class VideoPlan:
    info: VideoInfo | None
    chunks: list[ChunkPlan]
    error: str | None = None  # why the video cannot be redacted


def plan_video(data: VideoSource, policy: Policy, settings: Settings) -> VideoPlan:
    """Probe and plan; a file Veil cannot redact gives a plan with an error instead."""
    try:
        info, packets = probe_video(data, settings.limits.max_image_pixels)
        seconds = chunk_seconds_for(info.duration_s, policy.chunk_seconds,
                                    frame_rate=float(Fraction(info.average_rate)))
        return VideoPlan(info, plan_chunks(packets, info.tb, seconds))
    except (ProbeError, ValueError) as exc:
        return VideoPlan(None, [], f"not a video Veil can redact: {exc}")


def record_video_jobs(conn: Conn, source_id: uuid.UUID, plan: VideoPlan,
                      actor: str) -> list[tuple[int, str, str]]:
    """Chunk jobs, the assemble job and the chunks' outbox rows; returns the rows to send."""
    if plan.info is None:
        job_id = job_id_for(source_id, JobKind.CHUNK, 0)
        jobs.create_failed_job(conn, job_id, source_id, JobKind.CHUNK, plan.error or "")
        ledger.audit(conn, actor, AuditAction.JOB_FAILED, source_id=source_id, job_id=job_id,
                     detail={"reason": plan.error})
        return []
    ledger_sources.record_video_probe(conn, source_id, plan.info.to_json())
    chunks = [{"id": job_id_for(source_id, JobKind.CHUNK, c.index), "index": c.index,
               "first_frame": c.first_frame, "frame_count": c.frame_count, "plan": c.to_json()}
              for c in plan.chunks]
    jobs.create_video_jobs(conn, source_id, chunks, plan.info.frame_count)
    return ledger.add_outbox_rows(conn, [(str(c["id"]), str(JobKind.CHUNK)) for c in chunks])
