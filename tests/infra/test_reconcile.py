"""Upload intents (infra/reconcile.py), against the real services: an ingest SIGKILLed after its
upload leaves an intent that `veil status` and `veil purge --dry-run` show and the purge
deletes; an ingest that records its source takes its intent over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from infra.objectstore import client_for, list_all_versions
from infra.reconcile import INTENT_REASON
from infra.settings import Settings
from schemas.keys import raw_key, sha256_hex
from tests.rights import VEIL, ingest_file, rows, veil
from tests.unrecorded import face_photo, unrecorded_in_status
from workers.retention.purge import purge_due


def test_an_ingest_killed_after_upload_leaves_no_object_without_a_deadline(
        clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> None:
    # given an ingest that is SIGKILLed after it uploaded the original, before it recorded it
    path = face_photo(tmp_path, "killed.jpg", unique_seed)
    key = raw_key(sha256_hex(path.read_bytes()), "jpg")
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
    assert unrecorded_in_status()["unrecorded_uploads"] == 1
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
    path = face_photo(tmp_path, "kept.jpg", unique_seed)
    result = ingest_file(clean_ledger, path, raw_ttl_s=86400)
    tasks = rows(clean_ledger, "SELECT source_id, reason, due_at > now() + interval '23 hours'"
                 " AS later FROM deletion_tasks")
    assert [(t["source_id"], t["later"]) for t in tasks] == [(result.source_id, True)]
    assert "raw retention" in tasks[0]["reason"]
