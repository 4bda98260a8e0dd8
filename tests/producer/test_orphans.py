"""No object without a ledger row (invariant 9), against the real services: an ingest SIGKILLed
after its upload leaves an intent that `veil status` and `veil purge --dry-run` show and the purge
deletes; the reconciler gives an object nobody recorded a deletion task due now, audited, and
leaves recorded objects and those of running jobs alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from infra import db, ledger
from infra.objectstore import client_for, list_all_versions, put_bytes
from infra.reconcile import INTENT_REASON, ORPHAN_REASON
from infra.settings import Settings
from schemas.keys import raw_key, redacted_key, sha256_hex
from tests.conftest import face_image, jpeg_bytes
from tests.rights import VEIL, ingest_file, rows, scratch_bucket, veil
from workers.retention.purge import purge_due
from workers.retention.reconcile import reconcile


def test_an_ingest_killed_after_upload_leaves_no_object_without_a_deadline(
        clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> None:
    # given an ingest that is SIGKILLed after it uploaded the original, before it recorded it
    data = jpeg_bytes(face_image(unique_seed, size=96))
    path = tmp_path / "killed.jpg"
    path.write_bytes(data)
    key = raw_key(sha256_hex(data), "jpg")
    admin = client_for("admin", clean_ledger)
    proc = subprocess.Popen([VEIL, "ingest", str(path)], env={
        **os.environ, "VEIL_TEST_INGEST_PAUSE_S": "60", "VEIL_LIMITS__ORPHAN_GRACE_S": "2"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not list_all_versions(admin, clean_ledger.s3.bucket_raw, key):
            assert time.monotonic() < deadline and proc.poll() is None, "no upload"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    # then no source names the object, but its deletion task was there before the bytes
    assert not rows(clean_ledger, "SELECT 1 FROM sources")
    tasks = rows(clean_ledger, "SELECT source_id, reason, state, created_at FROM deletion_tasks"
                 " WHERE bucket = %s AND key = %s", clean_ledger.s3.bucket_raw, key)
    assert [(t["source_id"], t["reason"], t["state"]) for t in tasks] == [
        (None, INTENT_REASON, "pending")]
    # and `veil status` counts it, in text and JSON
    status = json.loads(veil("status", "--json").stdout)
    assert status["unrecorded_objects"]["unrecorded_uploads"] == 1
    assert "1 uploads of ingests that did not record them" in veil("status").stdout
    time.sleep(2.1)  # the intent falls due (grace 2 s for this ingest)
    # when the operator looks at what the purge would take, and the purge runs
    dry = veil("purge", "--dry-run", "--json")
    assert [(r["key"], r["unrecorded"]) for r in json.loads(dry.stdout)] == [(key, True)]
    assert INTENT_REASON in veil("purge", "--dry-run").stdout
    report = purge_due(clean_ledger, max_runtime_s=60)
    # then every version of the orphan is gone, with a receipt
    assert report.deleted == 1
    assert not list_all_versions(admin, clean_ledger.s3.bucket_raw, key)


def test_ingest_takes_over_its_intent(clean_ledger: Settings, tmp_path: Path,
                                      unique_seed: int) -> None:
    path = tmp_path / "kept.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed, size=96)))
    result = ingest_file(clean_ledger, path, raw_ttl_s=86400)
    tasks = rows(clean_ledger, "SELECT source_id, reason, due_at > now() + interval '23 hours'"
                 " AS later FROM deletion_tasks")
    assert [(t["source_id"], t["later"]) for t in tasks] == [(result.source_id, True)]
    assert "raw retention" in tasks[0]["reason"]


@pytest.fixture()
def scratch(clean_ledger: Settings) -> Iterator[Settings]:
    """Settings whose raw, work and redacted buckets are this test's own (the shared S3 holds
    other checkouts' objects, which this ledger does not know)."""
    admin = client_for("admin", clean_ledger)
    gens = [scratch_bucket(admin, clean_ledger, f"rec-{b}", versioned=True)
            for b in ("raw", "work", "redacted")]
    raw, work, redacted = (next(g) for g in gens)
    # The reconciler lists as the retention role, whose grants name the real buckets only: on
    # these scratch buckets it lists with admin's pair (tests/infra/test_grants.py checks roles).
    yield clean_ledger.model_copy(update={"s3": clean_ledger.s3.model_copy(update={
        "bucket_raw": raw, "bucket_work": work, "bucket_redacted": redacted,
        "retention": clean_ledger.s3.admin})})
    for g in gens:
        next(g, None)


def _put(client: Minio, bucket: str, key: str) -> None:
    put_bytes(client, bucket, key, b"ciphertext nobody recorded", "application/octet-stream")


def test_the_reconciler_schedules_objects_nobody_recorded(
        clean_ledger: Settings, scratch: Settings, tmp_path: Path, unique_seed: int) -> None:
    admin = client_for("admin", scratch)
    s3 = scratch.s3
    # given an unrecorded raw object, an unrecorded chunk, a recorded output, and the output of
    # a source whose job is still queued (its worker will record it)
    lost_raw = raw_key("ab" * 32, "jpg")
    lost_chunk = f"sources/{uuid.uuid4()}/chunks/000000.mp4"
    recorded = f"sources/{uuid.uuid4()}/redacted.jpg"
    path = tmp_path / "busy.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed, size=96)))
    busy = ingest_file(clean_ledger, path)  # its original goes to the shared raw bucket
    busy_output = redacted_key(busy.source_id, "jpg")  # type: ignore[arg-type]
    for bucket, key in ((s3.bucket_raw, lost_raw), (s3.bucket_work, lost_chunk),
                        (s3.bucket_redacted, recorded), (s3.bucket_redacted, busy_output)):
        _put(admin, bucket, key)
    with db.transaction(scratch) as conn:
        ledger.schedule_deletion(conn, None, s3.bucket_redacted, recorded,
                                 ledger.KEEP_UNTIL_ERASED, "test: recorded")
    # when the reconciler runs before the grace period is over, it finds nothing
    assert reconcile(scratch, grace_s=3600).orphans == []
    # and after it, exactly the two unrecorded objects get a deletion task due now, audited
    found = reconcile(scratch, grace_s=0, actor="reconciler@test")
    assert sorted(found.orphans) == sorted([(s3.bucket_raw, lost_raw), (s3.bucket_work,
                                                                        lost_chunk)])
    tasks = rows(scratch, "SELECT bucket, key FROM deletion_tasks WHERE reason = %s"
                 " AND due_at <= now()", ORPHAN_REASON)
    assert sorted((t["bucket"], t["key"]) for t in tasks) == sorted(found.orphans)
    audited = rows(scratch, "SELECT actor, key FROM audit_events WHERE action = 'orphan_found'")
    assert sorted(a["key"] for a in audited) == sorted([lost_raw, lost_chunk])
    assert {a["actor"] for a in audited} == {"reconciler@test"}
    status = json.loads(veil("status", "--json").stdout)
    assert status["unrecorded_objects"]["orphans"] == 2
    # a second pass finds nothing new; the purge deletes the orphans and nothing else
    assert reconcile(scratch, grace_s=0).orphans == []
    purge_due(scratch, max_runtime_s=60)
    assert not list_all_versions(admin, s3.bucket_raw, lost_raw)
    assert not list_all_versions(admin, s3.bucket_work, lost_chunk)
    assert {k for k, _ in list_all_versions(admin, s3.bucket_redacted)} == {recorded,
                                                                            busy_output}
