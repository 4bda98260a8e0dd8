"""One job's skeleton, written once: claim, process, publish, record (invariant 1).

Every job (an image, a video chunk, a video's assembly) runs these steps in this order, and the
order is what makes delivery fail closed:

1. **claim**: one transaction takes the job's lease (``ledger.claim_job``), loads what the job
   needs and, when the job reads the original, loads its data key and audits ``raw_read`` with
   the claim (the read follows at once). A job that already finished is ``skipped`` (a
   duplicate delivery);
2. **process**: in memory, with no ledger write: any error fails the job while nothing is
   published;
3. **publish**: put the whole output under its deterministic key (a rerun overwrites it);
4. **record**: ONE transaction that locks the job and checks for erasure first. A cancelled
   job's output gets a deletion task due now and the outcome is ``cancelled`` (workers cannot
   delete: the retention worker does, at once); otherwise the artifact, its deletion deadline,
   the ``output_write`` audit event and the job's end commit together, so a job is done only
   with its output recorded.

A kind of job states only its own steps (a :class:`JobSteps`); leases and retries are the
task's (``workers.job_task``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from minio import Minio

from infra import db, keyring, ledger
from infra.db import Conn
from infra.objectstore import StoredObject, client_for, put_bytes
from infra.settings import Settings
from schemas.enums import AuditAction
from schemas.policy import Policy

Outcome = Literal["succeeded", "skipped", "cancelled"]
Loaded = TypeVar("Loaded")  # what a job loads with its claim
Work = TypeVar("Work")  # what processing produced besides the output's bytes, for the record


@dataclass(frozen=True)
class RawRead:
    """A job that reads the original: its ``raw_read`` audit event, with this detail."""

    detail: dict[str, Any] | None = None


READS_RAW = RawRead()


@dataclass(frozen=True)
class Claimed(Generic[Loaded]):
    """A claimed job: its context and policy, what its claim loaded, the original's data key
    (None unless the job reads it), and when the run started (timings count from there)."""

    job: ledger.JobContext
    policy: Policy
    loaded: Loaded
    data_key: bytes | None
    started: float


@dataclass(frozen=True)
class Output(Generic[Work]):
    """What a job publishes: one object, and what its record needs. ``audit_detail`` follows
    the sha256 in the ``output_write`` event; ``frames`` (video) becomes the job's progress."""

    bucket: str
    key: str
    data: bytes
    content_type: str
    work: Work
    timings: dict[str, float]
    audit_detail: dict[str, Any]
    frames: int | None = None


@dataclass(frozen=True)
class Published:
    """The stored output, the seconds its put took, and when the put returned."""

    stored: StoredObject
    store_s: float
    done: float


class JobSteps(Generic[Loaded, Work]):
    """The steps of one kind of job; :func:`run_job` calls them in order, each once."""

    delayed_in_tests = True  # held by ``settings.test_job_delay_s`` after its claim

    def load(self, conn: Conn, job: ledger.JobContext, policy: Policy) -> Loaded:
        """In the claim's transaction: what processing needs from the ledger (may refuse
        with ``PermanentJobError``)."""
        raise NotImplementedError

    def reads_raw(self, policy: Policy) -> RawRead | None:
        """Whether this job reads the original (audited with the claim)."""
        return READS_RAW

    def process(self, claimed: Claimed[Loaded], s3: Minio) -> Output[Work]:
        """The job's work, in memory: no ledger writes (nothing is published yet)."""
        raise NotImplementedError

    def record(self, conn: Conn, claimed: Claimed[Loaded], output: Output[Work],
               published: Published) -> None:
        """In the publishing transaction: the artifact, its deletion deadline and the job's
        other rows (the runner adds the audit event and finishes the job)."""
        raise NotImplementedError

    def finished(self, conn: Conn, claimed: Claimed[Loaded]) -> Callable[[], object] | None:
        """After the job is marked done, in the same transaction; returns what to do once it
        commits (a chunk sends the assembly it enqueued)."""
        return None


def rounded(timings: dict[str, float]) -> dict[str, float]:
    """Timings as the ledger keeps them: seconds to four places."""
    return {k: round(v, 4) for k, v in timings.items()}


def run_job(job_id: str | uuid.UUID, settings: Settings, actor: str,
            steps: JobSteps[Loaded, Work], s3: Minio | None = None) -> Outcome:
    """Run one job through its steps; ``skipped`` when it had already finished."""
    started = time.perf_counter()
    claimed = _claim(job_id, settings, actor, steps, started)
    if claimed is None:
        return "skipped"
    if steps.delayed_in_tests and settings.test_job_delay_s:
        time.sleep(settings.test_job_delay_s)
    s3 = s3 or client_for("worker", settings)
    output = steps.process(claimed, s3)
    put_at = time.perf_counter()
    stored = put_bytes(s3, output.bucket, output.key, output.data, output.content_type)
    done = time.perf_counter()
    published = Published(stored, done - put_at, done)
    job = claimed.job
    with db.process_transaction(settings) as conn:
        if ledger.job_cancelled(conn, job.job_id):  # erased meanwhile: publish nothing
            # Workers cannot delete (least privilege): the retention worker does, at once.
            ledger.schedule_deletion(conn, job.source_id, stored.bucket, stored.key,
                                     datetime.now(UTC), "output of a cancelled job")
            return "cancelled"
        steps.record(conn, claimed, output, published)
        ledger.audit(conn, actor, AuditAction.OUTPUT_WRITE, source_id=job.source_id,
                     job_id=job.job_id, bucket=stored.bucket, key=stored.key,
                     detail={"sha256": stored.sha256, **output.audit_detail})
        if output.frames is not None:
            ledger.record_job_progress(conn, job.job_id, output.frames)
        ledger.finish_job(conn, job.job_id)
        after_commit = steps.finished(conn, claimed)
    if after_commit is not None:
        after_commit()
    return "succeeded"


def _claim(job_id: str | uuid.UUID, settings: Settings, actor: str,
           steps: JobSteps[Loaded, Work], started: float) -> Claimed[Loaded] | None:
    with db.process_transaction(settings) as conn:
        job = ledger.claim_job(conn, job_id, actor, settings.limits.job_lease_s)
        if job is None:
            return None
        policy = Policy.model_validate(job.policy)
        loaded = steps.load(conn, job, policy)
        raw_read = steps.reads_raw(policy)
        data_key = None
        if raw_read is not None:  # recorded with the claim: the read follows at once
            data_key = keyring.load_key(conn, job.source_id)
            ledger.audit(conn, actor, AuditAction.RAW_READ, source_id=job.source_id,
                         job_id=job.job_id, bucket=job.raw_bucket, key=job.raw_key,
                         detail=raw_read.detail)
    return Claimed(job, policy, loaded, data_key, started)
