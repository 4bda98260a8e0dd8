"""The purge against real PostgreSQL and S3: exactly the due objects go, every version, once,
with a receipt; failures are retried with backoff; overdue deletions are loud.

Time runs fast by writing due times in the past, never by waiting for them."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio

from infra import db, keyring, ledger
from infra.broker import celery_config, queue_name
from infra.objectstore import list_all_versions
from infra.settings import Settings
from producer.metrics import collect, render
from producer.status import overview
from schemas import messages
from tests.conftest import face_image, jpeg_bytes
from tests.rights import execute, ingest_file, rows, scratch_bucket
from tests.workers.retention.conftest import store_due
from workers.retention.purge import PurgeReport, purge_due


@pytest.fixture()
def plain_bucket(admin: Minio, clean_ledger: Settings) -> Iterator[str]:
    yield from scratch_bucket(admin, clean_ledger, "plain", versioned=False)


def test_purge_deletes_exactly_the_due_objects_every_version(
        clean_ledger: Settings, admin: Minio, prefix: str, plain_bucket: str) -> None:
    # given due and not-yet-due objects in a versioned bucket (three versions each, one key
    # also with a delete marker on top) and in an unversioned bucket
    work = clean_ledger.s3.bucket_work
    due = [(work, f"{prefix}due-{i}") for i in range(3)] + \
          [(plain_bucket, f"{prefix}plain-due-{i}") for i in range(2)]
    kept = [(work, f"{prefix}later-{i}") for i in range(2)] + [(plain_bucket, f"{prefix}later")]
    for bucket, key in due:
        store_due(clean_ledger, admin, bucket, key, -5, versions=3 if bucket == work else 1)
    admin.remove_object(work, due[0][1])  # a plain delete: only a marker, the bytes stay
    for bucket, key in kept:
        store_due(clean_ledger, admin, bucket, key, 3600, versions=2 if bucket == work else 1)

    # when the purge runs (as admin: the unversioned scratch bucket is outside the grants table)
    report = purge_due(clean_ledger, actor="purge@test", s3=admin)

    # then exactly the due objects are gone, every version and marker; the others are intact
    assert (report.deleted, report.failed, report.deferred) == (5, 0, 0)
    for bucket, key in due:
        assert list_all_versions(admin, bucket, key) == [], (bucket, key)
    for bucket, key in kept:
        assert list_all_versions(admin, bucket, key), (bucket, key)
    # and each due task has a receipt naming the versions, the purger and the time
    tasks = {(r["bucket"], r["key"]): r for r in rows(
        clean_ledger, "SELECT bucket, key, state, receipt, done_at FROM deletion_tasks")}
    for bucket, key in due:
        task = tasks[(bucket, key)]
        assert task["state"] == "done" and task["done_at"] is not None
        receipt = task["receipt"]
        assert receipt["purger"] == "purge@test" and receipt["key"] == key
        assert len(receipt["versions"]) == (4 if key == due[0][1] else
                                            3 if bucket == work else 1)
        assert datetime.fromisoformat(receipt["deleted_at"]) >= datetime.fromisoformat(
            receipt["due_at"])
    assert all(tasks[k]["state"] == "pending" for k in kept)
    audited = rows(clean_ledger, "SELECT key FROM audit_events WHERE action = 'purge'"
                   " AND key LIKE %s", f"{prefix}%")
    assert sorted(r["key"] for r in audited) == sorted(k for _, k in due)
    # and a second purge finds nothing to do
    assert purge_due(clean_ledger).deleted == 0


@pytest.mark.parametrize(("objects", "batch", "threads"), [(60, 5, 2), (240, 80, 8)])
def test_two_purgers_at_once_delete_each_object_once(
        clean_ledger: Settings, admin: Minio, prefix: str, objects: int, batch: int,
        threads: int) -> None:
    # given due objects and two purgers taking batches at the same moment (small ones, and
    # ones that take more than one DeleteObjects request)
    keys = [f"{prefix}obj-{i:03d}" for i in range(objects)]
    for key in keys:
        store_due(clean_ledger, admin, clean_ledger.s3.bucket_work, key, -1)
    small = clean_ledger.model_copy(update={
        "retention": clean_ledger.retention.model_copy(update={"purge_batch": batch,
                                                                "purge_threads": threads})})
    start = threading.Barrier(2)
    reports: dict[str, PurgeReport] = {}

    def run(name: str) -> None:
        start.wait()
        reports[name] = purge_due(small, actor=name)

    threads = [threading.Thread(target=run, args=(f"purge@p{i}",)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)

    # then together they deleted all, each exactly once: one receipt and one audit event each
    assert sum(r.deleted for r in reports.values()) == objects
    assert sum(r.failed for r in reports.values()) == 0
    done = rows(clean_ledger, "SELECT key, state, claimed_by, attempts FROM deletion_tasks")
    assert all(r["state"] == "done" and r["attempts"] == 1 for r in done)
    events = Counter(r["key"] for r in rows(
        clean_ledger, "SELECT key FROM audit_events WHERE action = 'purge' AND key LIKE %s",
        f"{prefix}%"))
    assert events == Counter({k: 1 for k in keys})
    assert {r["claimed_by"] for r in done} <= {"purge@p1", "purge@p2"}
    assert all(list_all_versions(admin, clean_ledger.s3.bucket_work, k) == [] for k in keys)


def test_a_failed_deletion_is_retried_with_backoff_and_stays_loud(
        clean_ledger: Settings, missing_bucket: str) -> None:
    # given a due task whose bucket does not exist (the server refuses every attempt)
    missing = missing_bucket
    with db.transaction(clean_ledger) as conn:
        ledger.schedule_deletion(conn, None, missing, "k", datetime.now(UTC) - timedelta(
            seconds=1), "test")
    # when the purge runs
    first = purge_due(clean_ledger)
    # then it failed with the error recorded, and the retry waits for the backoff
    assert first.failed == 1 and missing in first.errors[0]
    task = rows(clean_ledger, "SELECT * FROM deletion_tasks")[0]
    # (the retention role has no grant on an unknown bucket: SeaweedFS refuses before it looks)
    assert task["state"] == "pending" and task["attempts"] == 1
    assert "NoSuchBucket" in task["last_error"] or "AccessDenied" in task["last_error"]
    wait = (task["next_attempt_at"] - datetime.now(UTC)).total_seconds()
    assert clean_ledger.retention.retry_base_s - 5 < wait <= clean_ledger.retention.retry_base_s
    assert purge_due(clean_ledger).failed == 0  # not retried before its time
    # when its retry time comes, again and again
    for _ in range(clean_ledger.retention.max_attempts - 1):
        execute(clean_ledger, "UPDATE deletion_tasks SET next_attempt_at = now()")
        purge_due(clean_ledger)
    # then it is marked failed after max_attempts, still scheduled, and counted as overdue
    task = rows(clean_ledger, "SELECT * FROM deletion_tasks")[0]
    assert task["state"] == "failed"
    assert task["attempts"] == clean_ledger.retention.max_attempts
    assert task["next_attempt_at"] > datetime.now(UTC)
    assert overview(clean_ledger)["deletions"]["overdue"] == 1
    assert "veil_deletions_overdue 1.0\n" in render(collect(clean_ledger))
    assert 'veil_deletions{state="failed"} 1.0\n' in render(collect(clean_ledger))
    assert len(rows(clean_ledger, "SELECT id FROM audit_events WHERE action = 'purge_failed'"
                    " AND bucket = %s", missing)) == clean_ledger.retention.max_attempts


def test_purging_a_raw_original_destroys_its_key_first(
        clean_ledger: Settings, admin: Minio, tmp_path: Path, unique_seed: int) -> None:
    # given an ingested source whose raw retention (1 s, from --raw-ttl) ran out
    path = tmp_path / "a.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed)))
    result = ingest_file(clean_ledger, path, raw_ttl_s=1)
    assert result.source_id is not None
    source = rows(clean_ledger, "SELECT * FROM sources WHERE id = %s", result.source_id)[0]
    time.sleep(1.1)
    overdue = render(collect(clean_ledger))
    assert "veil_deletions_overdue 1.0\n" in overdue
    # when the purge runs
    report = purge_due(clean_ledger, keep_receipts=True)
    # then the raw object is gone, its key destroyed, and the receipt says so with its checksum
    assert report.deleted == 1
    assert list_all_versions(admin, source["raw_bucket"], source["raw_key"]) == []
    with db.connect(clean_ledger) as conn, pytest.raises(keyring.KeyDestroyedError):
        keyring.load_key(conn, result.source_id)
    receipt = report.receipts[0]
    assert receipt["key_destroyed"] is True and receipt["sha256"] == source["sha256"]
    assert "veil_deletions_overdue 0.0\n" in render(collect(clean_ledger))


def test_the_purge_runs_on_the_retention_worker_when_sent(
        clean_ledger: Settings, retention_worker: object, admin: Minio, prefix: str) -> None:
    # given a due object and the purge scheduled on the retention queue, as beat sends it
    config = celery_config(clean_ledger)
    entry = config["beat_schedule"]["purge"]
    assert entry["task"] == messages.PURGE
    assert entry["schedule"] == timedelta(seconds=clean_ledger.retention.purge_interval_s)
    assert config["task_routes"][messages.PURGE]["queue"] == queue_name(clean_ledger,
                                                                        "retention")
    key = f"{prefix}by-worker"
    store_due(clean_ledger, admin, clean_ledger.s3.bucket_work, key, -1, versions=2)
    # when `veil purge` hands it to the retention worker
    from tests.rights import veil
    run = veil("purge")
    assert run.returncode == 0, run.stderr
    # then a worker deletes it and records its identity on the receipt
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        task = rows(clean_ledger, "SELECT state, receipt FROM deletion_tasks WHERE key = %s",
                    key)[0]
        if task["state"] == "done":
            break
        time.sleep(0.3)
    assert task["state"] == "done", task
    assert task["receipt"]["purger"].startswith("purge@")
    assert list_all_versions(admin, clean_ledger.s3.bucket_work, key) == []


def test_names_go_with_the_raw_original(clean_ledger: Settings, tmp_path: Path,
                                        unique_seed: int) -> None:
    # given a source whose file name, camera and capture time are personal data
    path = tmp_path / "jane_roe_passport.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed)))
    source = ingest_file(clean_ledger, path, raw_ttl_s=1, camera="home-door",
                         captured_at=datetime(2024, 5, 1, tzinfo=UTC))
    time.sleep(1.2)

    # when the purge deletes the raw original, as the retention role
    report = purge_due(clean_ledger.for_db_role("retention"))

    # then the file name is gone with it; camera and capture time stay for access requests
    assert report.deleted == 1 and report.failed == 0
    row = rows(clean_ledger, "SELECT original_name, camera, captured_at, names_cleared_at, sha256"
                             " FROM sources WHERE id = %s", source.source_id)[0]
    assert row["original_name"] == "purged" and row["camera"] == "home-door"
    assert row["names_cleared_at"] is not None and row["sha256"] == source.sha256


def test_a_policy_can_send_camera_and_capture_time_with_the_raw_original(
        clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> None:
    # given a source of the `strict` policy, which keeps camera and time only with the raw copy
    path = tmp_path / "john_doe_badge.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed)))
    source = ingest_file(clean_ledger, path, raw_ttl_s=1, camera="clinic-door", policy="strict",
                         captured_at=datetime(2024, 5, 1, tzinfo=UTC))
    time.sleep(1.2)
    # when the purge deletes the raw original
    report = purge_due(clean_ledger.for_db_role("retention"))
    # then name, camera and capture time are all gone with it
    assert report.deleted == 1 and report.failed == 0
    row = rows(clean_ledger, "SELECT original_name, camera, captured_at FROM sources"
                             " WHERE id = %s", source.source_id)[0]
    assert row == {"original_name": "purged", "camera": None, "captured_at": None}
