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
from workers.imageio import BadInputError
from workers.lease import LeaseHeartbeat
from workers.maintenance import sweep
from workers.reliability import run_batch, run_guarded


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


def _task(retries: int, name: str = "veil.redact_image") -> Any:
    """What run_guarded and run_batch read from a bound Celery task: its retry count, retry()
    (each call's arguments kept in ``retried``) and its app's send_task (kept in ``sent``)."""
    retried: list[dict[str, Any]] = []
    sent: list[tuple[str, list[str]]] = []

    def retry(**kwargs: Any) -> _Retry:
        retried.append(kwargs)
        return _Retry()
    app = SimpleNamespace(send_task=lambda task, args: sent.append((task, args)))
    return SimpleNamespace(name=name, request=SimpleNamespace(retries=retries, id="batch-1"),
                           retry=retry, retried=retried, app=app, sent=sent)


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


@pytest.fixture()
def three_jobs(short: Settings, tmp_path: Path, unique_seed: int) -> list[str]:
    ids = []
    for i in range(3):
        path = tmp_path / f"batch-{i}.jpg"
        path.write_bytes(jpeg_bytes(face_image(unique_seed + i, size=64)))
        result = ingest_file(short, path)
        assert result.job_id is not None
        ids.append(str(result.job_id))
    return ids


def test_a_batch_runs_each_job_on_its_own_a_transient_one_retried_alone(
        short: Settings, three_jobs: list[str]) -> None:
    transient, permanent, fine = three_jobs

    def body(job_id: str) -> str:
        with db.transaction(short) as conn:
            ledger.claim_job(conn, job_id, "worker-a", short.limits.job_lease_s)
        if job_id == transient:
            raise TransientStorageError("object store unavailable: ConnectionRefusedError")
        if job_id == permanent:
            raise BadInputError("not a decodable image")
        return "succeeded"

    # when one message holds three jobs: S3 fails for the first, the second is bad input
    task = _task(0, "veil.redact_images")
    outcomes = run_batch(task, short, "worker-a", three_jobs, body)
    # then the first is re-sent alone (a new message, its retry counted) and the others go on
    assert outcomes == ["retrying", "failed", "succeeded"]
    assert len(task.retried) == 1
    assert task.retried[0]["args"] == [transient] and task.retried[0]["throw"] is False
    assert task.retried[0]["max_retries"] == short.limits.max_attempts - 1
    job = _job(short, uuid.UUID(transient))
    assert job["state"] == "queued" and job["attempt_causes"] == {"transient": 1}
    job = _job(short, uuid.UUID(permanent))
    assert job["state"] == "failed" and job["error"] == "not a decodable image"
    assert task.sent == []


def test_a_batch_past_half_its_soft_limit_re_sends_the_jobs_not_started(
        short: Settings, three_jobs: list[str]) -> None:
    limits = {**short.limits.model_dump(), "task_soft_time_limit_s": 2,
              "task_hard_time_limit_s": 3}
    tight = short.model_copy(update={"limits": LimitSettings(**limits)})
    ran: list[str] = []

    def slow(job_id: str) -> str:
        ran.append(job_id)
        time.sleep(1.05)  # past half the 2 s soft limit
        return "succeeded"

    task = _task(0, "veil.redact_images")
    outcomes = run_batch(task, tight, "worker-a", three_jobs, slow)
    # the first ran; the two not started go back as one new message, no attempt counted
    assert ran == three_jobs[:1]
    assert outcomes == ["succeeded", "re-sent", "re-sent"]
    assert task.sent == [("veil.redact_images", three_jobs[1:])]
    for job_id in three_jobs[1:]:
        job = _job(tight, uuid.UUID(job_id))
        assert job["state"] == "queued" and job["attempts"] == 0 and not job["attempt_causes"]
