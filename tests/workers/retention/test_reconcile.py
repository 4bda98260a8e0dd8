"""The reconciler (workers/retention/reconcile.py), against the real services: it gives an
object nobody recorded a deletion task due now, audited, and leaves recorded objects and those
of running jobs alone (invariant 9)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from infra import db, ledger
from infra.objectstore import client_for, list_all_versions, put_bytes
from infra.reconcile import ORPHAN_REASON
from infra.settings import Settings
from schemas.keys import raw_key, redacted_key
from tests.rights import ingest_file, rows, scratch_bucket
from tests.unrecorded import face_photo, unrecorded_in_status
from workers.retention.purge import purge_due
from workers.retention.reconcile import reconcile


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
    path = face_photo(tmp_path, "busy.jpg", unique_seed)
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
    assert unrecorded_in_status()["orphans"] == 2
    # a second pass finds nothing new; the purge deletes the orphans and nothing else
    assert reconcile(scratch, grace_s=0).orphans == []
    purge_due(scratch, max_runtime_s=60)
    assert not list_all_versions(admin, s3.bucket_raw, lost_raw)
    assert not list_all_versions(admin, s3.bucket_work, lost_chunk)
    assert {k for k, _ in list_all_versions(admin, s3.bucket_redacted)} == {recorded,
                                                                            busy_output}
