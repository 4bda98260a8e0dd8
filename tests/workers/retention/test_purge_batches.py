"""The purge's batched deletion against real PostgreSQL and SeaweedFS: a batch lists the versions
of a folder's due keys together and deletes them with DeleteObjects, and still removes every
version of exactly the due keys, once each, failing only the task whose object was refused."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from minio import Minio

from infra import db, keyring
from infra.objectstore import list_all_versions, set_legal_hold, supports_object_lock
from infra.objectstore_bulk import RANGE_BUDGET_PER_KEY, RANGE_MIN_KEYS
from infra.settings import Settings
from producer.holds import release_hold, set_hold
from tests.rights import execute, rows, scratch_bucket
from tests.workers.retention.conftest import ingest_due, store_due
from workers.retention.purge import purge_due


def _versions(client: Minio, bucket: str, key: str) -> list[str | None]:
    return [v for k, v in list_all_versions(client, bucket, key) if k == key]


def _tasks(settings: Settings) -> dict[str, dict[str, object]]:
    return {r["key"]: r for r in rows(settings, "SELECT * FROM deletion_tasks")}


def _purge_events(settings: Settings, action: str, prefix: str) -> Counter[str]:
    return Counter(r["key"] for r in rows(
        settings, "SELECT key FROM audit_events WHERE action = %s AND key LIKE %s", action,
        f"{prefix}%"))


def test_a_folder_of_due_keys_goes_every_version_and_its_neighbours_stay(
        clean_ledger: Settings, admin: Minio, prefix: str) -> None:
    # given 40 due keys in one folder (listed as one range), some with two versions, some
    # with a delete marker on top, among keys that are not due: names that sort between them,
    # extend them, or sit just before and after the range
    work = clean_ledger.s3.bucket_work
    due = [f"{prefix}obj-{i:03d}" for i in range(40)]
    kept = [f"{prefix}obj-{i:03d}x" for i in (0, 7, 39)] + [f"{prefix}obj-0100", f"{prefix}obj-",
                                                            f"{prefix}obj-040", f"{prefix}a"]
    assert len(due) >= RANGE_MIN_KEYS
    for i, key in enumerate(due):
        store_due(clean_ledger, admin, work, key, -5, versions=2 if i % 3 == 0 else 1)
        if i % 5 == 0:
            admin.remove_object(work, key)  # a plain delete: a marker on top, the bytes stay
    for key in kept:
        store_due(clean_ledger, admin, work, key, 3600, versions=2)
    before = {key: _versions(admin, work, key) for key in due}

    # when the purge runs as the retention role
    report = purge_due(clean_ledger, keep_receipts=True)

    # then every version and marker of every due key is gone, each named on its receipt
    assert (report.deleted, report.failed, report.batches) == (40, 0, 1), report.errors
    receipts = {r["key"]: r for r in report.receipts}
    for key in due:
        assert _versions(admin, work, key) == [], key
        assert sorted(receipts[key]["versions"]) == sorted(before[key]), key
    # and the keys beside them keep both their versions
    for key in kept:
        assert len(_versions(admin, work, key)) == 2, key
    tasks = _tasks(clean_ledger)
    assert all(tasks[k]["state"] == "done" and tasks[k]["attempts"] == 1 for k in due)
    assert all(tasks[k]["state"] == "pending" for k in kept)
    assert _purge_events(clean_ledger, "purge", prefix) == Counter(due)


def test_due_keys_scattered_in_a_big_folder_are_all_found(
        clean_ledger: Settings, admin: Minio, prefix: str) -> None:
    # given 8 due keys spread among 64 keys that are not due, in one folder: the range of the
    # due keys holds far more entries than a ranged listing may read for them
    work = clean_ledger.s3.bucket_work
    keys = [f"{prefix}k-{i:03d}" for i in range(72)]
    due = keys[::9]
    assert len(due) >= RANGE_MIN_KEYS and 72 - 9 > RANGE_BUDGET_PER_KEY * len(due)
    for key in keys:
        store_due(clean_ledger, admin, work, key, -1 if key in due else 3600)

    # when the purge runs
    report = purge_due(clean_ledger)

    # then the ranged listing gave up part way and the rest were listed key by key: every due
    # key is gone, every other key is intact
    assert (report.deleted, report.failed) == (8, 0), report.errors
    for key in keys:
        assert (_versions(admin, work, key) == []) == (key in due), key
    assert _purge_events(clean_ledger, "purge", prefix) == Counter(due)


@pytest.fixture()
def locked_bucket(admin: Minio, clean_ledger: Settings) -> Iterator[str]:
    yield from scratch_bucket(admin, clean_ledger, "purge-locked", versioned=True,
                              object_lock=True)


def test_an_object_the_server_refuses_fails_only_its_own_task(
        clean_ledger: Settings, admin: Minio, locked_bucket: str, missing_bucket: str) -> None:
    # given 12 due objects of two versions in one folder of a bucket with object lock, one
    # version of one of them under an S3 legal hold (set on the server, not in the ledger),
    # and in the same batch a task whose bucket does not exist
    keys = [f"case/obj-{i:02d}" for i in range(12)]
    refused = keys[5]
    for key in keys:
        store_due(clean_ledger, admin, locked_bucket, key, -1, versions=2)
    held_version = _versions(admin, locked_bucket, refused)[-1]
    admin.enable_object_legal_hold(locked_bucket, refused, version_id=held_version)
    store_due(clean_ledger, admin, missing_bucket, "gone", -1, versions=0)

    # when the purge runs (as admin: the scratch bucket is outside the grants table)
    report = purge_due(clean_ledger, s3=admin)

    # then the other 11 are gone with a receipt each; the refused object and the missing
    # bucket failed on their own tasks, with the server's answer, and wait for a retry
    assert (report.deleted, report.failed) == (11, 2), report.errors
    tasks = _tasks(clean_ledger)
    for key in keys:
        if key != refused:
            assert _versions(admin, locked_bucket, key) == [], key
            assert tasks[key]["state"] == "done" and len(tasks[key]["receipt"]["versions"]) == 2
    for key in (refused, "gone"):
        assert tasks[key]["state"] == "pending" and tasks[key]["attempts"] == 1
        assert tasks[key]["receipt"] is None
        assert tasks[key]["next_attempt_at"] > datetime.now(UTC)
    assert "AccessDenied" in tasks[refused]["last_error"]
    assert "NoSuchBucket" in tasks["gone"]["last_error"]
    assert held_version in _versions(admin, locked_bucket, refused)
    failed = rows(clean_ledger, "SELECT bucket, key FROM audit_events"
                  " WHERE action = 'purge_failed' AND detail->>'task_id' = ANY(%s)",
                  [str(tasks[k]["id"]) for k in tasks])
    assert sorted((r["bucket"], r["key"]) for r in failed) == [(missing_bucket, "gone"),
                                                               (locked_bucket, refused)]

    # when the server lets go and the retry time comes
    admin.disable_object_legal_hold(locked_bucket, refused, version_id=held_version)
    execute(clean_ledger, "UPDATE deletion_tasks SET next_attempt_at = now() WHERE key = %s",
            refused)
    again = purge_due(clean_ledger, s3=admin)
    # then the refused object goes too, and its receipt names the version that was held
    assert again.deleted == 1
    assert _versions(admin, locked_bucket, refused) == []
    receipt = _tasks(clean_ledger)[refused]["receipt"]
    assert held_version in receipt["versions"]


def test_a_held_source_in_a_batch_waits_while_the_rest_go(
        clean_ledger: Settings, admin: Minio, prefix: str, tmp_path: Path,
        unique_seed: int) -> None:
    # given a due raw original under legal hold, and 10 due objects of the same batch
    source = ingest_due(clean_ledger, tmp_path, unique_seed)
    assert source.source_id is not None
    hold = set_hold(clean_ledger, source.source_id, "case 77", "operator:test")
    raw = rows(clean_ledger, "SELECT raw_bucket, raw_key FROM sources")[0]
    work = clean_ledger.s3.bucket_work
    keys = [f"{prefix}obj-{i:02d}" for i in range(10)]
    for key in keys:
        store_due(clean_ledger, admin, work, key, -1)

    # when the purge runs
    report = purge_due(clean_ledger)

    # then the held original is deferred, naming the hold, with its key and bytes intact;
    # the others are deleted
    assert (report.deleted, report.deferred, report.failed) == (10, 1, 0)
    task = _tasks(clean_ledger)[raw["raw_key"]]
    assert task["state"] == "deferred" and f"legal hold {hold['hold_id']}" in task["last_error"]
    assert _versions(admin, raw["raw_bucket"], raw["raw_key"])
    with db.connect(clean_ledger) as conn:
        assert keyring.load_key(conn, source.source_id)
    assert all(_versions(admin, work, key) == [] for key in keys)
    release_hold(clean_ledger, source.source_id, "closed", "operator:test")


def test_a_raw_original_loses_its_key_even_when_its_delete_is_refused(
        clean_ledger: Settings, admin: Minio, tmp_path: Path, unique_seed: int) -> None:
    # given a due raw original whose bucket has object lock, under an S3 legal hold that the
    # ledger does not know (so the purge goes ahead and the server refuses the delete)
    source = ingest_due(clean_ledger, tmp_path, unique_seed)
    assert source.source_id is not None
    raw = rows(clean_ledger, "SELECT raw_bucket, raw_key FROM sources")[0]
    bucket, key = raw["raw_bucket"], raw["raw_key"]
    assert supports_object_lock(admin, bucket), "the stack creates the raw bucket with lock"
    assert set_legal_hold(admin, bucket, key, enabled=True) == 1
    try:
        # when the purge runs
        report = purge_due(clean_ledger)
        # then the delete failed and will be retried, but the data key was destroyed first:
        # what is left in S3 is ciphertext nobody can read
        assert (report.deleted, report.failed) == (0, 1)
        task = _tasks(clean_ledger)[key]
        assert task["state"] == "pending" and "AccessDenied" in task["last_error"]
        assert _versions(admin, bucket, key)
        with db.connect(clean_ledger) as conn, pytest.raises(keyring.KeyDestroyedError):
            keyring.load_key(conn, source.source_id)
    finally:
        set_legal_hold(admin, bucket, key, enabled=False)
