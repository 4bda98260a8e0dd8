"""Chunk and assemble jobs as plain functions: no Celery here (the tasks wrap them).

Both follow the image job's order for fail-closed delivery (invariant 1): claim with a lease and
audit the raw read in one transaction; process in memory; put the output; then ONE transaction
that checks for erasure first, records the artifact and its deletion deadline and finishes the
job. A chunk's finishing transaction also decides, atomically in PostgreSQL, whether it was the
last chunk (``ledger.enqueue_assembly_if_last``); the assemble job is then sent after commit,
and the outbox relay re-sends it if that send is lost.

Assembly publishes only when every chunk succeeded and the joined video holds exactly the probed
frames; a failed chunk fails the assembly (a trigger in the ledger), so nothing is published.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from minio import Minio

from infra import db, keyring, ledger
from infra.objectstore import client_for, get_bytes, put_bytes
from infra.settings import Settings
from infra.video_probe import VideoInfo
from schemas import messages
from schemas.chunks import ChunkPlan
from schemas.enums import AuditAction, JobKind, JobState, Stage
from schemas.keys import chunk_key, redacted_key
from schemas.policy import Policy
from workers.detectors.base import Detector
from workers.reliability import PermanentJobError
from workers.video.assemble import AssemblyError, assemble
from workers.video.chunk import ChunkWork, redact_chunk

Outcome = Literal["succeeded", "skipped", "cancelled"]
Progress = Callable[[int, int], None]
SendRows = Callable[[Sequence[tuple[int, str, str]]], object]
PROGRESS_EVERY_S = 2.0
MP4 = "video/mp4"


def _claim(job_id: str | uuid.UUID, settings: Settings, actor: str, read_raw: bool
           ) -> tuple[ledger.JobContext, ledger.VideoJob, bytes | None] | None:
    with db.process_transaction(settings) as conn:
        job = ledger.claim_job(conn, job_id, actor, settings.limits.job_lease_s)
        if job is None:
            return None
        video = ledger.load_video_job(conn, job)
        if video.assembly_failed and job.kind == str(JobKind.CHUNK):
            raise PermanentJobError(f"not run: {video.assembly_failed}")
        data_key = None
        if read_raw:  # recorded with the claim: the read follows at once
            data_key = keyring.load_key(conn, job.source_id)
            ledger.audit(conn, actor, AuditAction.RAW_READ, source_id=job.source_id,
                         job_id=job.job_id, bucket=job.raw_bucket, key=job.raw_key)
    return job, video, data_key


def open_original(s3: Minio, data_key: bytes, job: ledger.JobContext,
                  settings: Settings) -> keyring.RawReader:
    """The original as a file read on demand: a chunk task fetches and authenticates only the
    segments its decoder touches (the container index and its own time range), so a chunk of
    an hour-long video neither downloads nor holds the whole file (``keyring.RawReader``)."""
    return keyring.RawReader(s3, data_key, keyring.RawObject(
        job.source_id, job.raw_bucket, job.raw_key, job.raw_version_id),
                             max_bytes=settings.limits.max_file_bytes)


@dataclass(frozen=True)
class ChunkRun:
    """How a worker runs a chunk job: its S3 client (a worker one from the settings when None),
    where frame progress goes, how the assembly task is sent, and decoder threads (0: auto)."""

    s3: Minio | None = None
    progress: Progress | None = None
    send: SendRows | None = None
    threads: int = 0


def process_chunk_job(job_id: str | uuid.UUID, settings: Settings, detector: Detector,
                      actor: str, run: ChunkRun | None = None) -> Outcome:
    """Redact one chunk into `work`; the last chunk to finish enqueues the assembly."""
    run = run or ChunkRun()
    started = time.perf_counter()
    claimed = _claim(job_id, settings, actor, read_raw=True)
    if claimed is None:
        return "skipped"
    job, video, data_key = claimed
    assert data_key is not None and video.chunk is not None
    if settings.test_job_delay_s:
        time.sleep(settings.test_job_delay_s)
    policy = Policy.model_validate(job.policy)
    info, plan = VideoInfo.from_json(video.video), ChunkPlan.from_json(video.chunk)
    s3 = run.s3 or client_for("worker", settings)
    with open_original(s3, data_key, job, settings) as raw:
        fetched = time.perf_counter()
        output = redact_chunk(ChunkWork(
            raw, info, plan, policy, detector, settings.video, run.threads,
            progress=_progress_recorder(job.job_id, settings, run.progress)))
        raw_read = {"raw_bytes_read": raw.fetched, "raw_bytes": raw.size}
    redacted = time.perf_counter()
    stored = put_bytes(s3, settings.s3.bucket_work, chunk_key(job.source_id, plan.index),
                       output.data, MP4)
    timings = {"fetch_s": fetched - started, "redact_s": redacted - fetched,
               "store_s": time.perf_counter() - redacted,
               "fps": output.frames / max(redacted - fetched, 1e-9)}
    artifact = ledger.ArtifactRecord(
        bucket=stored.bucket, key=stored.key, version_id=stored.version_id, sha256=stored.sha256,
        size_bytes=stored.size, content_type=MP4, width=info.display_size[0],
        height=info.display_size[1],
        params={**output.params, "frames": output.frames, "detections": output.detections,
                "coasted_boxes": output.coasted, "tracks": len(output.tracks), **raw_read},
        input_sha256=job.source_sha256, timings={k: round(v, 4) for k, v in timings.items()})
    ranges = [ledger.DetectionRange(t.first_frame, t.last_frame, t.cls, t.score, t.box)
              for t in output.tracks]
    with db.process_transaction(settings) as conn:
        if ledger.job_cancelled(conn, job.job_id):  # erased meanwhile: publish nothing
            # Workers cannot delete (least privilege): the retention worker does, at once.
            ledger.schedule_deletion(conn, job.source_id, stored.bucket, stored.key,
                                     datetime.now(UTC), "output of a cancelled job")
            return "cancelled"
        ledger.record_artifact(conn, job, str(Stage.CHUNK), output.model_version, artifact, [])
        ledger.record_detection_ranges(conn, job.job_id, str(Stage.CHUNK),
                                       output.model_version, ranges)
        ledger.schedule_deletion(
            conn, job.source_id, stored.bucket, stored.key,
            datetime.now(UTC) + timedelta(seconds=policy.work_retention_s),
            reason=f"policy {policy.name} v{policy.version}: work retention")
        ledger.audit(conn, actor, AuditAction.OUTPUT_WRITE, source_id=job.source_id,
                     job_id=job.job_id, bucket=stored.bucket, key=stored.key,
                     detail={"sha256": stored.sha256, "frames": output.frames,
                             "chunk": plan.index})
        ledger.record_job_progress(conn, job.job_id, output.frames)
        ledger.finish_job(conn, job.job_id)
        assembly = ledger.enqueue_assembly_if_last(
            conn, job.source_id, messages.TASK_FOR_JOB_KIND[str(JobKind.ASSEMBLE)])
    if assembly and run.send:
        run.send([assembly])
    return "succeeded"


def _progress_recorder(job_id: uuid.UUID, settings: Settings,
                       report: Progress | None) -> Progress:
    """Frames done, to the caller (Flower) on every batch and to the ledger every few seconds."""
    last = [0.0]

    def record(done: int, total: int) -> None:
        if report:
            report(done, total)
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S:
            last[0] = now
            with db.process_transaction(settings) as conn:
                ledger.record_job_progress(conn, job_id, done)
    return record


def process_assemble_job(job_id: str | uuid.UUID, settings: Settings, actor: str,
                         s3: Minio | None = None) -> Outcome:
    """Join a video's chunks into `redacted`; schedule the chunks for deletion."""
    started = time.perf_counter()
    with db.process_transaction(settings) as conn:
        job = ledger.claim_job(conn, job_id, actor, settings.limits.job_lease_s)
        if job is None:
            return "skipped"
        policy = Policy.model_validate(job.policy)
        chunks = ledger.chunk_artifacts(conn, job.source_id)
        video = ledger.load_video_job(conn, job)
        data_key = None
        if policy.audio == "keep":
            data_key = keyring.load_key(conn, job.source_id)
            ledger.audit(conn, actor, AuditAction.RAW_READ, source_id=job.source_id,
                         job_id=job.job_id, bucket=job.raw_bucket, key=job.raw_key,
                         detail={"purpose": "audio"})
    missing = [c.chunk_index for c in chunks if c.state != JobState.SUCCEEDED or c.key is None]
    if missing or not chunks:
        raise PermanentJobError(f"source {job.source_id}: chunks {missing} have no redacted "
                                "output; nothing is published")
    info = VideoInfo.from_json(video.video)
    s3 = s3 or client_for("worker", settings)
    parts = [get_bytes(s3, c.bucket, c.key, version_id=c.version_id)  # type: ignore[arg-type]
             for c in chunks]
    original = open_original(s3, data_key, job, settings) if data_key else None
    fetched = time.perf_counter()
    try:
        result = assemble(parts, info, original, keep_audio=policy.audio == "keep")
    except AssemblyError as exc:
        raise PermanentJobError(f"source {job.source_id}: {exc}") from exc
    joined = time.perf_counter()
    stored = put_bytes(s3, settings.s3.bucket_redacted, redacted_key(job.source_id, "mp4"),
                       result.data, MP4)
    artifact = _assembled_artifact(stored, chunks, result, info, policy, job)
    artifact.timings.update({"fetch_s": round(fetched - started, 4),
                             "assemble_s": round(joined - fetched, 4),
                             "store_s": round(time.perf_counter() - joined, 4)})
    model_version = chunks[0].model_version or "unknown"
    with db.process_transaction(settings) as conn:
        if ledger.job_cancelled(conn, job.job_id):
            # Workers cannot delete (least privilege): the retention worker does, at once.
            ledger.schedule_deletion(conn, job.source_id, stored.bucket, stored.key,
                                     datetime.now(UTC), "output of a cancelled job")
            return "cancelled"
        ledger.record_artifact(conn, job, str(Stage.REDACT), model_version, artifact, [])
        ledger.schedule_output_deletion(conn, job.source_id, stored.bucket, stored.key,
                                        policy.redacted_retention_s,
                                        f"{policy.name} v{policy.version}")
        for chunk in chunks:
            ledger.schedule_deletion(conn, job.source_id, chunk.bucket, chunk.key,  # type: ignore[arg-type]
                                     datetime.now(UTC), reason="chunk joined into the output")
        ledger.audit(conn, actor, AuditAction.OUTPUT_WRITE, source_id=job.source_id,
                     job_id=job.job_id, bucket=stored.bucket, key=stored.key,
                     detail={"sha256": stored.sha256, "frames": result.frames,
                             "chunks": len(chunks)})
        ledger.record_job_progress(conn, job.job_id, result.frames)
        ledger.finish_job(conn, job.job_id)
    return "succeeded"


def _assembled_artifact(stored: Any, chunks: list[Any], result: Any, info: VideoInfo,
                        policy: Policy, job: Any) -> ledger.ArtifactRecord:
    """The output's ledger record: its lineage chunk by chunk, and the settings they shared."""
    lineage = [{"job_id": str(c.job_id), "chunk": c.chunk_index, "frame_start": c.frame_start,
                "frame_count": c.frame_count, "sha256": c.sha256,
                "model_version": c.model_version,
                "detections": (c.params or {}).get("detections"),
                "tracks": (c.params or {}).get("tracks"),
                "guard": (c.params or {}).get("guard")} for c in chunks]
    first = chunks[0].params or {}
    return ledger.ArtifactRecord(
        bucket=stored.bucket, key=stored.key, version_id=stored.version_id, sha256=stored.sha256,
        size_bytes=stored.size, content_type=MP4, width=info.display_size[0],
        height=info.display_size[1],
        params={"chunks": lineage, "frames": result.frames, "audio": policy.audio,
                "audio_streams": result.audio_streams, "dropped_streams": info.dropped_streams,
                "encoder": first.get("encoder"), "detector": first.get("detector"),
                "tracking": first.get("tracking"), "redaction": first.get("redaction")},
        input_sha256=job.source_sha256, timings={})
