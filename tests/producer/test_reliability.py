"""At-least-once delivery, idempotent jobs, the outbox relay and the lease sweeper, against real
Redis, PostgreSQL and S3."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import psycopg
import pytest

from infra import outbox
from infra.broker import make_celery
from infra.objectstore import client_for, list_all_versions
from infra.policies import get_policy
from infra.settings import LimitSettings, Settings
from producer.ingest import IngestOptions, _file_input, _ingest_one, wait_for
from schemas import messages
from tests.conftest import face_image, jpeg_bytes, start_worker, stop_worker


def _ingest_without_sending(path: Path, settings: Settings):  # type: ignore[no-untyped-def]
    """Write the ledger rows exactly as ingest does, as if the process died before sending."""
    client = client_for("producer", settings)
    result, row = _ingest_one(_file_input(path), IngestOptions(get_policy(None, settings)),
                              settings, client)
    assert row is not None
    return result


def _job(settings: Settings, job_id: object) -> dict:  # type: ignore[type-arg]
    with psycopg.connect(settings.db.url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT * FROM jobs WHERE id = %s", (job_id,)).fetchone()  # type: ignore[return-value]


def test_relay_sends_an_outbox_row_that_was_never_sent(
        clean_ledger: Settings, worker: object, tmp_path: Path, unique_seed: int) -> None:
    # given a committed job whose task was never sent
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed)))
    result = _ingest_without_sending(path, clean_ledger)
    time.sleep(1.0)
    assert _job(clean_ledger, result.job_id)["state"] == "queued"
    # when the relay runs
    sent = outbox.relay(make_celery(clean_ledger), clean_ledger, older_than_s=0)
    # then the job is delivered and done, and the row is marked sent (a second relay sends none)
    assert sent == 1
    states = wait_for([result.source_id], clean_ledger, timeout_s=60)
    assert states[result.source_id][0] == "succeeded"
    assert outbox.relay(make_celery(clean_ledger), clean_ledger, older_than_s=0) == 0


def test_a_batch_of_images_is_redacted_one_by_one_and_a_bad_one_fails_alone(
        clean_ledger: Settings, worker: object, tmp_path: Path, unique_seed: int) -> None:
    # given four committed image jobs, one whose original no longer matches its sha256
    results = []
    for i in range(4):
        path = tmp_path / f"batch-{i}.jpg"
        path.write_bytes(jpeg_bytes(face_image(unique_seed + i)))
        results.append(_ingest_without_sending(path, clean_ledger))
    tampered = results[1]
    with psycopg.connect(clean_ledger.db.url) as conn:
        conn.execute("UPDATE sources SET sha256 = repeat('0', 64) WHERE id = %s",
                     (tampered.source_id,))
        rows = conn.execute("SELECT id, task_name, job_id::text FROM outbox"
                            " WHERE job_id = ANY(%s) ORDER BY id",
                            ([r.job_id for r in results],)).fetchall()
    # when they are sent as one message (a queue deep enough for batches)
    limits = {**clean_ledger.limits.model_dump(), "images_batch_depth": 0}
    deep = clean_ledger.model_copy(update={"limits": LimitSettings(**limits)})
    assert [m.task_name for m in outbox.plan_messages(rows, deep.limits.images_per_task)] == [
        messages.REDACT_IMAGES]
    assert outbox.send_rows(make_celery(deep), deep, rows) == 4
    # then the worker redacts the three good ones and fails the tampered one, naming why
    states = wait_for([r.source_id for r in results], clean_ledger, timeout_s=60)
    assert {r.source_id: states[r.source_id][0] for r in results} == {
        r.source_id: "failed" if r is tampered else "succeeded" for r in results}
    assert "does not match its recorded" in (states[tampered.source_id][1] or "")
    with psycopg.connect(clean_ledger.db.url) as conn:
        stored = conn.execute("SELECT count(*) FROM artifacts WHERE source_id = ANY(%s)",
                              ([r.source_id for r in results],)).fetchone()
    assert stored is not None and stored[0] == 3


def test_running_the_same_job_twice_leaves_one_set_of_rows(
        clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> None:
    from workers import runtime
    from workers.image_job import process_image_job

    path = tmp_path / "b.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed)))
    result = _ingest_without_sending(path, clean_ledger)
    detector = runtime.detector()
    assert process_image_job(result.job_id, clean_ledger, detector, "test") == "succeeded"
    # a re-delivery after a lost ack: the job is claimed again and runs to the end again
    with psycopg.connect(clean_ledger.db.url) as conn:
        first_run = conn.execute("SELECT count(*) FROM detections").fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE jobs SET state = 'running' WHERE id = %s", (result.job_id,))
    assert process_image_job(result.job_id, clean_ledger, detector, "test") == "succeeded"
    # and a duplicate of a finished job is skipped
    assert process_image_job(result.job_id, clean_ledger, detector, "test") == "skipped"
    with psycopg.connect(clean_ledger.db.url) as conn:
        artifacts = conn.execute("SELECT key, sha256 FROM artifacts").fetchall()
        detections = conn.execute("SELECT count(*) FROM detections").fetchone()[0]  # type: ignore[index]
        deletions = conn.execute("SELECT count(*) FROM deletion_tasks").fetchone()[0]  # type: ignore[index]
        attempts = conn.execute("SELECT attempts FROM jobs").fetchone()[0]  # type: ignore[index]
    assert len(artifacts) == 1
    # the face (and any faint box; the image is random) recorded once, not once per run
    assert detections == first_run >= 1
    assert deletions == 2  # raw and redacted deadlines, each once
    assert attempts == 2
    # same deterministic key, same bytes
    key = artifacts[0][0]
    versions = list_all_versions(client_for("admin", clean_ledger),
                                 clean_ledger.s3.bucket_redacted, key)
    assert {k for k, _ in versions} == {key}


def test_sigkilled_worker_loses_no_job(clean_ledger: Settings, tmp_path: Path,
                                       unique_seed: int) -> None:
    """A worker killed with SIGKILL mid-task: the unacknowledged message survives in Redis and
    the lease sweeper re-queues the job from PostgreSQL; the job ends succeeded."""
    from workers.maintenance import sweep

    # a queue of its own, so the session's worker cannot take the job
    isolated = {"VEIL_BROKER__QUEUE_PREFIX": "veil-test-kill"}
    settings = clean_ledger.model_copy(update={"broker": clean_ledger.broker.model_copy(
        update={"queue_prefix": "veil-test-kill"})})
    app = make_celery(settings)
    slow = start_worker(extra_env={**isolated, "VEIL_TEST_JOB_DELAY_S": "20"})
    try:
        path = tmp_path / "c.jpg"
        path.write_bytes(jpeg_bytes(face_image(unique_seed)))
        result = _ingest_without_sending(path, clean_ledger)
        outbox.relay(app, settings, older_than_s=0)
        deadline = time.monotonic() + 30
        while _job(clean_ledger, result.job_id)["state"] != "running":
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
    finally:
        stop_worker(slow, signal.SIGKILL)
    assert _job(clean_ledger, result.job_id)["state"] == "running"
    # the lease expires (forced here instead of waiting for it) and the sweeper re-queues
    with psycopg.connect(clean_ledger.db.url) as conn:
        conn.execute("UPDATE jobs SET lease_expires_at = now() - interval '1 s'")
    assert sweep(app, settings)["requeued"] == 1
    fresh = start_worker(extra_env=isolated)
    try:
        states = wait_for([result.source_id], clean_ledger, timeout_s=90)
    finally:
        stop_worker(fresh)
    assert states[result.source_id][0] == "succeeded"
    assert _job(clean_ledger, result.job_id)["attempts"] >= 2


def test_sweeper_gives_up_after_max_attempts(clean_ledger: Settings, tmp_path: Path,
                                             unique_seed: int) -> None:
    from workers.maintenance import sweep

    path = tmp_path / "d.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed)))
    result = _ingest_without_sending(path, clean_ledger)
    with psycopg.connect(clean_ledger.db.url) as conn:
        conn.execute("UPDATE jobs SET state = 'running', attempts = %s,"
                     " lease_expires_at = now() - interval '1 s'",
                     (clean_ledger.limits.max_attempts,))
    assert sweep(make_celery(clean_ledger), clean_ledger)["gave_up"] == 1
    job = _job(clean_ledger, result.job_id)
    assert job["state"] == "failed" and "gave up" in job["error"]


@pytest.mark.parametrize("statement", ["UPDATE audit_events SET actor = 'x'",
                                       "DELETE FROM audit_events", "TRUNCATE audit_events"])
def test_audit_events_are_append_only(services: Settings, statement: str) -> None:
    with psycopg.connect(services.db.url) as conn:
        conn.execute("INSERT INTO audit_events (actor, action) VALUES ('test', 'ingest')")
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(statement)
