"""The image job as a plain function: get raw, redact, put `redacted`, record. No Celery here.

Order matters for fail-closed delivery (invariant 1): nothing is written to `redacted` until the
whole image went through detection and redaction, and the job is marked done only in the same
transaction that records the artifact, its detections and its deletion deadline.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Literal

from minio import Minio

from infra import db, keyring, ledger
from infra.objectstore import client_for, put_bytes
from infra.settings import Settings
from schemas.enums import AuditAction, Stage
from schemas.keys import redacted_key
from schemas.policy import Policy
from workers.detectors.base import Detector
from workers.image_pipeline import redact_image_bytes

Outcome = Literal["succeeded", "skipped", "cancelled"]


def process_image_job(job_id: str | uuid.UUID, settings: Settings, detector: Detector,
                      actor: str, s3: Minio | None = None) -> Outcome:
    """Run one image job; ``skipped`` when it already finished (a duplicate delivery)."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with db.process_transaction(settings) as conn:
        job = ledger.claim_job(conn, job_id, actor, settings.limits.job_lease_s)
        if job is not None:  # recorded with the claim: the read follows at once
            data_key = keyring.load_key(conn, job.source_id)
            ledger.audit(conn, actor, AuditAction.RAW_READ, source_id=job.source_id,
                         job_id=job.job_id, bucket=job.raw_bucket, key=job.raw_key)
    if job is None:
        return "skipped"
    if settings.test_job_delay_s:
        time.sleep(settings.test_job_delay_s)
    policy = Policy.model_validate(job.policy)
    s3 = s3 or client_for("worker", settings)

    raw = keyring.read_original(s3, data_key, keyring.RawObject(
        job.source_id, job.raw_bucket, job.raw_key, job.raw_version_id),
                                sha256=job.source_sha256, max_bytes=settings.limits.max_file_bytes)
    timings["fetch_s"] = time.perf_counter() - started

    t = time.perf_counter()
    result = redact_image_bytes(raw, policy, detector, settings.limits.max_image_pixels)
    timings["redact_s"] = time.perf_counter() - t

    t = time.perf_counter()
    key = redacted_key(job.source_id, result.ext)
    stored = put_bytes(s3, settings.s3.bucket_redacted, key, result.data, result.content_type)
    timings["store_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started

    artifact = ledger.ArtifactRecord(
        bucket=stored.bucket, key=stored.key, version_id=stored.version_id, sha256=stored.sha256,
        size_bytes=stored.size, content_type=result.content_type, width=result.width,
        height=result.height, params=result.params, input_sha256=job.source_sha256,
        timings={k: round(v, 4) for k, v in timings.items()},
    )
    detections = [ledger.DetectionRow(result.frame_of(i), d.cls, float(d.score),
                                      tuple(map(float, d.box)), d.uncertain)  # type: ignore[arg-type]
                  for i, d in enumerate(result.detections)]
    with db.process_transaction(settings) as conn:
        if ledger.job_cancelled(conn, job.job_id):  # erased meanwhile: publish nothing
            # Workers cannot delete (least privilege): the retention worker does, at once.
            ledger.schedule_deletion(conn, job.source_id, stored.bucket, stored.key,
                                     datetime.now(UTC), "output of a cancelled job")
            return "cancelled"
        ledger.record_artifact(conn, job, str(Stage.REDACT), result.model_version, artifact,
                               detections)
        ledger.schedule_output_deletion(conn, job.source_id, stored.bucket, stored.key,
                                        policy.redacted_retention_s,
                                        f"{policy.name} v{policy.version}")
        ledger.audit(conn, actor, AuditAction.OUTPUT_WRITE, source_id=job.source_id,
                     job_id=job.job_id, bucket=stored.bucket, key=stored.key,
                     detail={"sha256": stored.sha256, "detections": len(detections)})
        ledger.finish_job(conn, job.job_id)
    return "succeeded"
