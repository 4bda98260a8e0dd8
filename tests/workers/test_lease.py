"""Leases by heartbeat and attempts by cause, against the real PostgreSQL: a renewed lease keeps
the sweeper away, a lease left to run out is swept and counted as a lost worker, and every way
an attempt ends is counted, so the give-up reason names the causes with their counts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from infra import db, jobs, ledger
from infra.broker import make_celery
from infra.objectstore import TransientStorageError
from infra.settings import LimitSettings, Settings
from tests.conftest import face_image, jpeg_bytes
from tests.rights import execute, ingest_file, rows
from workers.lease import LeaseHeartbeat
from workers.maintenance import sweep
from workers.reliability import run_guarded


@pytest.fixture()
def short(clean_ledger: Settings) -> Settings:
    """A 3 s lease renewed every second, on a queue no worker serves (nothing runs the job)."""
    limits = clean_ledger.limits.model_dump()
    limits.update(job_lease_s=3, heartbeat_interval_s=1, max_attempts=5)
    return clean_ledger.model_copy(update={
        "limits": LimitSettings(**limits),
        "broker": clean_ledger.broker.model_copy(update={"queue_prefix": "veil-test-lease"})})


@pytest.fixture()
def job_id(short: Settings, tmp_path: Path, unique_seed: int) -> uuid.UUID:
    path = tmp_path / "lease.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed, size=64)))
    result = ingest_file(short, path)
    assert result.job_id is not None
    return result.job_id


def _claim(settings: Settings, job_id: uuid.UUID, worker: str) -> None:
    with db.transaction(settings) as conn:
        assert ledger.claim_job(conn, job_id, worker, settings.limits.job_lease_s) is not None


def _job(settings: Settings, job_id: uuid.UUID) -> dict[str, Any]:
    return rows(settings, "SELECT *, lease_expires_at > now() AS leased FROM jobs WHERE id = %s",
                job_id)[0]


def test_a_renewed_lease_outlives_its_length_and_a_lost_one_is_swept(
        short: Settings, job_id: uuid.UUID) -> None:
    # given a running job whose worker renews its 3 s lease every second
    _claim(short, job_id, "worker-a")
    app = make_celery(short)
    with LeaseHeartbeat(short, job_id, "worker-a") as beat:
        time.sleep(4.5)
        # then the lease is still current after longer than its length, and a sweep leaves it
        assert _job(short, job_id)["leased"]
        assert sweep(app, short)["requeued"] == 0
    assert beat.renewals >= 3
    # when the worker is gone (no more renewals) and the lease runs out
    time.sleep(3.5)
    report = sweep(app, short)
    # then the sweeper re-queues the job and counts a lost worker
    assert report == {"requeued": 1, "gave_up": 0, "sent": 1}
    job = _job(short, job_id)
    assert job["state"] == "queued" and job["attempt_causes"] == {"worker_lost": 1}


def test_a_heartbeat_stops_once_another_worker_holds_the_job(
        short: Settings, job_id: uuid.UUID) -> None:
    _claim(short, job_id, "worker-a")
    with LeaseHeartbeat(short, job_id, "worker-a") as beat:
        time.sleep(1.5)
        _claim(short, job_id, "worker-b")  # a duplicate delivery took it over
        time.sleep(2.5)
        assert not beat._thread.is_alive()
    job = _job(short, job_id)
    assert job["worker"] == "worker-b" and job["attempt_causes"] == {"redelivered": 1}


def test_the_give_up_reason_names_each_cause_with_its_count(
        short: Settings, job_id: uuid.UUID) -> None:
    # given a job that used its attempts: two transient errors, one re-delivery, one lost worker
    execute(short, "UPDATE jobs SET state = 'running', attempts = %s,"
            " attempt_causes = '{\"transient\": 2, \"redelivered\": 1, \"worker_lost\": 1}',"
            " lease_expires_at = now() - interval '1 s' WHERE id = %s",
            short.limits.max_attempts, job_id)
    # when its last worker is lost too
    assert sweep(make_celery(short), short)["gave_up"] == 1
    # then it fails naming every cause, and the failure is audited
    job = _job(short, job_id)
    assert job["state"] == "failed"
    assert job["error"] == (
        "gave up after 5 attempts (worker lost (lease expired) 2 times, re-delivered while "
        "running (pool child killed, or duplicate delivery) once, transient error 2 times)")
    audited = rows(short, "SELECT detail FROM audit_events WHERE job_id = %s"
                   " AND action = 'job_failed'", job_id)
    assert [a["detail"]["reason"] for a in audited] == [job["error"]]


class _Retry(Exception):
    pass


def _task(retries: int) -> Any:
    """The two things run_guarded reads from a bound Celery task: its retry count and retry()."""
    def retry(**kwargs: Any) -> _Retry:
        return _Retry()
    return SimpleNamespace(name="veil.redact_image", request=SimpleNamespace(retries=retries),
                           retry=retry)


def test_transient_retries_are_counted_and_named_when_the_job_gives_up(
        short: Settings, job_id: uuid.UUID) -> None:
    def body() -> None:
        with db.transaction(short) as conn:
            ledger.claim_job(conn, job_id, "worker-a", short.limits.job_lease_s)
        raise TransientStorageError("object store unavailable: ConnectionRefusedError")

    # when every attempt meets an unreachable S3
    last = short.limits.max_attempts - 1
    for retries in range(last):
        with pytest.raises(_Retry):
            run_guarded(_task(retries), short, str(job_id), "worker-a", body)
        job = _job(short, job_id)
        # then each retry leaves the job queued (no lease to expire) with the cause counted
        assert job["state"] == "queued" and job["lease_expires_at"] is None
        assert job["attempt_causes"] == {"transient": retries + 1}
    assert run_guarded(_task(last), short, str(job_id), "worker-a", body) == "failed"
    # and the give-up names transient errors only: no lost worker is invented
    job = _job(short, job_id)
    assert job["state"] == "failed" and job["attempts"] == short.limits.max_attempts
    assert job["error"] == ("gave up after 5 attempts (transient error 5 times): "
                            "TransientStorageError: object store unavailable: "
                            "ConnectionRefusedError")


def test_describe_causes_reads_as_text() -> None:
    assert jobs.describe_causes({}) == "no cause recorded"
    assert jobs.describe_causes({"error": 1, "resent": 3}) == (
        "unexpected error once, re-sent after waiting in the queue 3 times")
