"""The image job as a plain function: get raw, redact, put `redacted`, record. No Celery here.

Its steps run in ``workers.job_runner``'s fail-closed order (invariant 1): nothing is written
to `redacted` until the whole image went through detection and redaction, and the job is marked
done only in the same transaction that records the artifact, its detections and its deletion
deadline.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from minio import Minio

from infra import keyring, ledger
from infra.db import Conn
from infra.settings import Settings
from schemas.enums import Stage
from schemas.keys import redacted_key
from schemas.policy import Policy
from workers.detectors.base import Detector
from workers.image_pipeline import ImageResult, redact_image_bytes
from workers.job_runner import (
    Claimed,
    JobSteps,
    Outcome,
    Output,
    Published,
    rounded,
    run_job,
)


def process_image_job(job_id: str | uuid.UUID, settings: Settings, detector: Detector,
                      actor: str, s3: Minio | None = None) -> Outcome:
    """Run one image job; ``skipped`` when it already finished (a duplicate delivery)."""
    return run_job(job_id, settings, actor, ImageJob(settings, detector), s3)


@dataclass(frozen=True)
class ImageJob(JobSteps[None, ImageResult]):
    """An image: read the whole original (sha256 re-checked), redact it, publish one file."""

    settings: Settings
    detector: Detector

    def load(self, conn: Conn, job: ledger.JobContext, policy: Policy) -> None:
        return None

    def process(self, claimed: Claimed[None], s3: Minio) -> Output[ImageResult]:
        job, limits = claimed.job, self.settings.limits
        assert claimed.data_key is not None  # an image job reads its original
        raw = keyring.read_original(s3, claimed.data_key, keyring.RawObject(
            job.source_id, job.raw_bucket, job.raw_key, job.raw_version_id),
                                    sha256=job.source_sha256, max_bytes=limits.max_file_bytes)
        fetched = time.perf_counter()
        result = redact_image_bytes(raw, claimed.policy, self.detector, limits.max_image_pixels)
        timings = {"fetch_s": fetched - claimed.started,
                   "redact_s": time.perf_counter() - fetched}
        return Output(self.settings.s3.bucket_redacted, redacted_key(job.source_id, result.ext),
                      result.data, result.content_type, result, timings,
                      {"detections": len(result.detections)})

    def record(self, conn: Conn, claimed: Claimed[None], output: Output[ImageResult],
               published: Published) -> None:
        job, policy, result, stored = claimed.job, claimed.policy, output.work, published.stored
        timings = {**output.timings, "store_s": published.store_s,
                   "total_s": published.done - claimed.started}
        artifact = ledger.ArtifactRecord(
            bucket=stored.bucket, key=stored.key, version_id=stored.version_id,
            sha256=stored.sha256, size_bytes=stored.size, content_type=result.content_type,
            width=result.width, height=result.height, params=result.params,
            input_sha256=job.source_sha256, timings=rounded(timings))
        detections = [ledger.DetectionRow(result.frame_of(i), d.cls, float(d.score),
                                          tuple(map(float, d.box)), d.uncertain)  # type: ignore[arg-type]
                      for i, d in enumerate(result.detections)]
        ledger.record_artifact(conn, job, str(Stage.REDACT), result.model_version, artifact,
                               detections)
        ledger.schedule_output_deletion(conn, job.source_id, stored.bucket, stored.key,
                                        policy.redacted_retention_s,
                                        f"{policy.name} v{policy.version}")
