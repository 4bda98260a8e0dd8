"""Chunk and assemble jobs as plain functions: no Celery here (the tasks wrap them).

Both run their steps in ``workers.job_runner``'s fail-closed order (invariant 1): claim with a
lease and audit the raw read in one transaction; process in memory; put the output; then ONE
transaction that checks for erasure first, records the artifact and its deletion deadline and
finishes the job. A chunk's finishing transaction also decides, atomically in PostgreSQL,
whether it was the last chunk (``ledger.enqueue_assembly_if_last``); the assemble job is then
sent after commit, and the outbox relay re-sends it if that send is lost.

Assembly publishes only when every chunk succeeded and the joined video holds exactly the probed
frames; a failed chunk fails the assembly (a trigger in the ledger), so nothing is published.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from minio import Minio

from infra import db, keyring, ledger
from infra.db import Conn
from infra.objectstore import StoredObject, get_bytes
from infra.settings import Settings
from infra.video_probe import VideoInfo
from schemas import messages
from schemas.chunks import ChunkPlan
from schemas.enums import JobKind, JobState, Stage
from schemas.keys import chunk_key, redacted_key
from schemas.policy import Policy
from workers.detectors.base import Detector
from workers.job_runner import (
    Claimed,
    JobSteps,
    Outcome,
    Output,
    Published,
    RawRead,
    rounded,
    run_job,
)
from workers.reliability import PermanentJobError
from workers.video.assemble import Assembled, AssemblyError, assemble
from workers.video.chunk import ChunkOutput, ChunkWork, redact_chunk

Progress = Callable[[int, int], None]
SendRows = Callable[[Sequence[tuple[int, str, str]]], object]
PROGRESS_EVERY_S = 2.0
MP4 = "video/mp4"


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
    return run_job(job_id, settings, actor, ChunkJob(settings, detector, run), run.s3)


@dataclass(frozen=True)
class RedactedChunk:
    """A chunk as redacted: its output, the probe and plan it followed, what it read of raw."""

    output: ChunkOutput
    info: VideoInfo
    plan: ChunkPlan
    raw_read: dict[str, int]


@dataclass(frozen=True)
class ChunkJob(JobSteps[ledger.VideoJob, RedactedChunk]):
    """A chunk: decode its time range of the original, redact every frame, put it in `work`."""

    settings: Settings
    detector: Detector
    run: ChunkRun

    def load(self, conn: Conn, job: ledger.JobContext, policy: Policy) -> ledger.VideoJob:
        video = ledger.load_video_job(conn, job)
        if video.assembly_failed and job.kind == str(JobKind.CHUNK):
            raise PermanentJobError(f"not run: {video.assembly_failed}")
        return video

    def process(self, claimed: Claimed[ledger.VideoJob], s3: Minio) -> Output[RedactedChunk]:
        job, video, settings = claimed.job, claimed.loaded, self.settings
        assert claimed.data_key is not None and video.chunk is not None
        info, plan = VideoInfo.from_json(video.video), ChunkPlan.from_json(video.chunk)
        with open_original(s3, claimed.data_key, job, settings) as raw:
            fetched = time.perf_counter()
            output = redact_chunk(ChunkWork(
                raw, info, plan, claimed.policy, self.detector, settings.video, self.run.threads,
                progress=_progress_recorder(job.job_id, settings, self.run.progress)))
            raw_read = {"raw_bytes_read": raw.fetched, "raw_bytes": raw.size}
        redacted = time.perf_counter()
        timings = {"fetch_s": fetched - claimed.started, "redact_s": redacted - fetched,
                   "fps": output.frames / max(redacted - fetched, 1e-9)}
        return Output(settings.s3.bucket_work, chunk_key(job.source_id, plan.index),
                      output.data, MP4, RedactedChunk(output, info, plan, raw_read), timings,
                      {"frames": output.frames, "chunk": plan.index}, frames=output.frames)

    def record(self, conn: Conn, claimed: Claimed[ledger.VideoJob],
               output: Output[RedactedChunk], published: Published) -> None:
        job, policy, stored = claimed.job, claimed.policy, published.stored
        chunk, redacted = output.work, output.work.output
        artifact = ledger.ArtifactRecord(
            bucket=stored.bucket, key=stored.key, version_id=stored.version_id,
            sha256=stored.sha256, size_bytes=stored.size, content_type=MP4,
            width=chunk.info.display_size[0], height=chunk.info.display_size[1],
            params={**redacted.params, "frames": redacted.frames,
                    "detections": redacted.detections, "coasted_boxes": redacted.coasted,
                    "tracks": len(redacted.tracks), **chunk.raw_read},
            input_sha256=job.source_sha256,
            timings=rounded({**output.timings, "store_s": published.store_s}))
        ranges = [ledger.DetectionRange(t.first_frame, t.last_frame, t.cls, t.score, t.box)
                  for t in redacted.tracks]
        ledger.record_artifact(conn, job, str(Stage.CHUNK), redacted.model_version, artifact, [])
        ledger.record_detection_ranges(conn, job.job_id, str(Stage.CHUNK),
                                       redacted.model_version, ranges)
        ledger.schedule_deletion(
            conn, job.source_id, stored.bucket, stored.key,
            datetime.now(UTC) + timedelta(seconds=policy.work_retention_s),
            reason=f"policy {policy.name} v{policy.version}: work retention")

    def finished(self, conn: Conn, claimed: Claimed[ledger.VideoJob]
                 ) -> Callable[[], object] | None:
        assembly = ledger.enqueue_assembly_if_last(
            conn, claimed.job.source_id, messages.TASK_FOR_JOB_KIND[str(JobKind.ASSEMBLE)])
        send = self.run.send
        if assembly is None or send is None:
            return None
        return lambda: send([assembly])


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
    return run_job(job_id, settings, actor, AssembleJob(settings), s3)


@dataclass(frozen=True)
class VideoChunks:
    """What an assembly loads with its claim: every chunk's recorded output, and the video."""

    chunks: list[ledger.ChunkArtifact]
    video: ledger.VideoJob


@dataclass(frozen=True)
class Joined:
    """The chunks joined into one video, and the probe it was checked against."""

    result: Assembled
    info: VideoInfo


@dataclass(frozen=True)
class AssembleJob(JobSteps[VideoChunks, Joined]):
    """An assembly: join the chunks (and the original's audio when kept) into `redacted`."""

    settings: Settings
    delayed_in_tests = False

    def load(self, conn: Conn, job: ledger.JobContext, policy: Policy) -> VideoChunks:
        return VideoChunks(ledger.chunk_artifacts(conn, job.source_id),
                           ledger.load_video_job(conn, job))

    def reads_raw(self, policy: Policy) -> RawRead | None:
        return RawRead({"purpose": "audio"}) if policy.audio == "keep" else None

    def process(self, claimed: Claimed[VideoChunks], s3: Minio) -> Output[Joined]:
        job, policy, chunks = claimed.job, claimed.policy, claimed.loaded.chunks
        missing = [c.chunk_index for c in chunks
                   if c.state != JobState.SUCCEEDED or c.key is None]
        if missing or not chunks:
            raise PermanentJobError(f"source {job.source_id}: chunks {missing} have no "
                                    "redacted output; nothing is published")
        info = VideoInfo.from_json(claimed.loaded.video.video)
        parts = [get_bytes(s3, c.bucket, c.key, version_id=c.version_id)  # type: ignore[arg-type]
                 for c in chunks]
        original = (open_original(s3, claimed.data_key, job, self.settings)
                    if claimed.data_key else None)
        fetched = time.perf_counter()
        try:
            result = assemble(parts, info, original, keep_audio=policy.audio == "keep")
        except AssemblyError as exc:
            raise PermanentJobError(f"source {job.source_id}: {exc}") from exc
        timings = {"fetch_s": fetched - claimed.started,
                   "assemble_s": time.perf_counter() - fetched}
        return Output(self.settings.s3.bucket_redacted, redacted_key(job.source_id, "mp4"),
                      result.data, MP4, Joined(result, info), timings,
                      {"frames": result.frames, "chunks": len(chunks)}, frames=result.frames)

    def record(self, conn: Conn, claimed: Claimed[VideoChunks], output: Output[Joined],
               published: Published) -> None:
        job, policy, stored = claimed.job, claimed.policy, published.stored
        chunks = claimed.loaded.chunks
        artifact = _assembled_artifact(claimed, output.work, stored)
        artifact.timings.update(rounded({**output.timings, "store_s": published.store_s}))
        model_version = chunks[0].model_version or "unknown"
        ledger.record_artifact(conn, job, str(Stage.REDACT), model_version, artifact, [])
        ledger.schedule_output_deletion(conn, job.source_id, stored.bucket, stored.key,
                                        policy.redacted_retention_s,
                                        f"{policy.name} v{policy.version}")
        for chunk in chunks:
            ledger.schedule_deletion(conn, job.source_id, chunk.bucket, chunk.key,  # type: ignore[arg-type]
                                     datetime.now(UTC), reason="chunk joined into the output")


def _assembled_artifact(claimed: Claimed[VideoChunks], joined: Joined,
                        stored: StoredObject) -> ledger.ArtifactRecord:
    """The output's ledger record: its lineage chunk by chunk, and the settings they shared."""
    chunks, result, info = claimed.loaded.chunks, joined.result, joined.info
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
        params={"chunks": lineage, "frames": result.frames, "audio": claimed.policy.audio,
                "audio_streams": result.audio_streams, "dropped_streams": info.dropped_streams,
                "encoder": first.get("encoder"), "detector": first.get("detector"),
                "tracking": first.get("tracking"), "redaction": first.get("redaction")},
        input_sha256=claimed.job.source_sha256, timings={})
