"""Legal holds against real PostgreSQL and S3: a hold defers the purge, releasing it lets the
next purge delete, erasure is refused naming the hold, and where the bucket has object lock the
S3 server itself refuses to delete a held version."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from infra import db, ledger
from infra.objectstore import client_for, list_all_versions, put_bytes, supports_object_lock
from infra.settings import Settings
from producer.holds import RightsError, release_hold, set_hold
from producer.ingest import IngestResult
from tests.conftest import face_image, jpeg_bytes
from tests.rights import ingest_file, rows, scratch_bucket, veil
from workers.retention.erase import erase_source
from workers.retention.purge import purge_due


@pytest.fixture()
def admin(clean_ledger: Settings) -> Minio:
    return client_for("admin", clean_ledger)


@pytest.fixture()
def due_source(clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> IngestResult:
    """A source whose raw retention (1 s) has just run out."""
    path = tmp_path / "held.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed)))
    result = ingest_file(clean_ledger, path, raw_ttl_s=1)
    time.sleep(1.1)
    return result


def _raw(settings: Settings, source_id: object) -> tuple[str, str]:
    src = rows(settings, "SELECT raw_bucket, raw_key FROM sources WHERE id = %s", source_id)[0]
    return src["raw_bucket"], src["raw_key"]


def test_hold_defers_the_purge_and_release_lets_the_next_purge_delete(
        clean_ledger: Settings, admin: Minio, due_source: IngestResult) -> None:
    sid = due_source.source_id
    bucket, key = _raw(clean_ledger, sid)
    # given a due source put under legal hold
    hold = set_hold(clean_ledger, sid, "case 2024-17", "operator:test")  # type: ignore[arg-type]
    # when the purge runs
    report = purge_due(clean_ledger)
    # then nothing is deleted; the deferral is recorded with the hold
    assert (report.deleted, report.deferred) == (0, 1)
    assert list_all_versions(admin, bucket, key)
    task = rows(clean_ledger, "SELECT state, last_error FROM deletion_tasks WHERE key = %s",
                key)[0]
    assert task["state"] == "deferred" and f"legal hold {hold['hold_id']}" in task["last_error"]
    deferred = rows(clean_ledger, "SELECT detail FROM audit_events WHERE action ="
                    " 'purge_deferred' AND source_id = %s", sid)
    assert [e["detail"]["hold_id"] for e in deferred] == [hold["hold_id"]]
    assert purge_due(clean_ledger).deferred == 0  # deferred once, not re-audited every minute
    # when the hold is released
    released = release_hold(clean_ledger, sid, "case closed", "operator:test")  # type: ignore[arg-type]
    assert released["deletions_resumed"] == 1
    # then the next purge deletes the original
    assert purge_due(clean_ledger).deleted == 1
    assert list_all_versions(admin, bucket, key) == []
    hold_row = rows(clean_ledger, "SELECT * FROM legal_holds WHERE id = %s", hold["hold_id"])[0]
    assert hold_row["released_by"] == "operator:test"
    assert hold_row["release_reason"] == "case closed"


def test_erasure_of_a_held_source_is_refused_naming_the_hold(
        clean_ledger: Settings, admin: Minio, due_source: IngestResult) -> None:
    sid = due_source.source_id
    hold = set_hold(clean_ledger, sid, "police request 881", "operator:test")  # type: ignore[arg-type]
    # when an erasure is asked for, through the library and the CLI
    with pytest.raises(RightsError, match=rf"legal hold {hold['hold_id']}.*police request 881"):
        erase_source(clean_ledger, sid, "consent withdrawn", "operator:test")  # type: ignore[arg-type]
    run = veil("erase", str(sid), "--reason", "consent withdrawn", "--now")
    # then it is refused with the hold named, exit code 1, and nothing was touched
    assert run.returncode == 1
    assert f"legal hold {hold['hold_id']}" in run.stderr and str(sid) in run.stderr
    assert json.loads(run.stdout)[0]["refused"]
    assert list_all_versions(admin, *_raw(clean_ledger, sid))
    assert rows(clean_ledger, "SELECT erased_at FROM sources WHERE id = %s",
                sid)[0]["erased_at"] is None
    assert rows(clean_ledger, "SELECT state FROM jobs WHERE source_id = %s",
                sid)[0]["state"] == "queued"
    release_hold(clean_ledger, sid, "done", "operator:test")  # type: ignore[arg-type]


def test_hold_errors_name_the_source(clean_ledger: Settings, due_source: IngestResult) -> None:
    unknown = uuid.uuid4()
    with pytest.raises(RightsError, match=f"no source {unknown}"):
        set_hold(clean_ledger, unknown, "x", "operator:test")
    sid = due_source.source_id
    with pytest.raises(RightsError, match=f"{sid} has no active legal hold"):
        release_hold(clean_ledger, sid, "x", "operator:test")  # type: ignore[arg-type]
    first = set_hold(clean_ledger, sid, "first", "operator:test")  # type: ignore[arg-type]
    run = veil("hold", "set", str(sid), "--reason", "second")
    assert run.returncode == 1
    assert f"already under legal hold {first['hold_id']}" in run.stderr
    run = veil("hold", "list", "--json")
    assert [h["id"] for h in json.loads(run.stdout)] == [first["hold_id"]]
    run = veil("hold", "release", str(sid), "--reason", "over")
    assert run.returncode == 0, run.stderr
    assert "0 deferred deletions due again" in run.stdout  # the purge never ran meanwhile


@pytest.fixture()
def locked_bucket(admin: Minio, clean_ledger: Settings) -> Iterator[str]:
    yield from scratch_bucket(admin, clean_ledger, "locked", versioned=True, object_lock=True)


def test_hold_is_an_s3_legal_hold_where_the_bucket_has_object_lock(
        clean_ledger: Settings, admin: Minio, due_source: IngestResult,
        locked_bucket: str) -> None:
    # given a source with an object in a bucket created with object lock (two versions), due
    sid = due_source.source_id
    key = f"sources/{sid}/evidence.bin"
    first = put_bytes(admin, locked_bucket, key, b"v1")
    put_bytes(admin, locked_bucket, key, b"v2")
    with db.transaction(clean_ledger) as conn:
        ledger.schedule_deletion(conn, sid, locked_bucket, key,
                                 datetime.now(UTC) - timedelta(seconds=1), "test")
    # when the source is held
    # admin: the scratch bucket lies outside the grants table (test_grants checks the roles)
    hold = set_hold(clean_ledger, sid, "case 9", "operator:test", admin)  # type: ignore[arg-type]
    # then both versions carry an S3 legal hold (and the raw original, where its bucket has
    # object lock too): the server refuses even the admin's delete
    raw_locked = supports_object_lock(admin, clean_ledger.s3.bucket_raw)
    assert hold["s3_versions_locked"] == 2 + int(raw_locked)
    assert admin.is_object_legal_hold_enabled(locked_bucket, key, version_id=first.version_id)
    with pytest.raises(S3Error):
        admin.remove_object(locked_bucket, key, version_id=first.version_id)
    assert purge_due(clean_ledger, s3=admin).deleted == 0
    # when released, the server lets go and the next purge deletes every version
    release_hold(clean_ledger, sid, "closed", "operator:test", admin)  # type: ignore[arg-type]
    assert not admin.is_object_legal_hold_enabled(locked_bucket, key,
                                                  version_id=first.version_id)
    assert purge_due(clean_ledger, s3=admin).deleted == 2  # the raw original and the evidence
    assert list_all_versions(admin, locked_bucket, key) == []
