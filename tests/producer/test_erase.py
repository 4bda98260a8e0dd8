"""Erasure through the real stack: after `veil erase` no version of any object of the source is
left in any bucket, its queued and running jobs are cancelled, its key is destroyed, and the
ledger keeps a tombstone without personal data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from minio import Minio

from infra import db, keyring, ledger
from infra.objectstore import client_for, list_all_versions, put_bytes
from infra.settings import Settings
from producer.holds import RightsError
from tests.conftest import face_image, jpeg_bytes
from tests.rights import ingest_file, rows, source_versions, veil
from workers.retention.erase import erase_source


@pytest.fixture()
def admin(clean_ledger: Settings) -> Minio:
    return client_for("admin", clean_ledger)


def test_erase_leaves_nothing_of_the_source_and_cancels_its_jobs(
        clean_ledger: Settings, worker: object, admin: Minio, tmp_path: Path,
        unique_seed: int) -> None:
    settings = clean_ledger
    # given two processed sources (raw original + redacted output), one with a chunk in `work`
    # that no ledger row records yet, a queued source and a running one
    done_dir = tmp_path / "done"
    done_dir.mkdir()
    for i in range(2):
        (done_dir / f"p{i}.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + i)))
    run = veil("ingest", str(done_dir), "--camera", "gate-1", "--captured-at",
               "2024-05-01T08:00:00", "--wait", "--json", "--timeout", "120")
    assert run.returncode == 0, run.stdout + run.stderr
    processed = {s["file"]: s["source_id"] for s in json.loads(run.stdout)["sources"]}
    erased_id, kept_id = processed["p0.jpg"], processed["p1.jpg"]
    chunk = put_bytes(client_for("worker", settings), settings.s3.bucket_work,
                      f"sources/{erased_id}/chunks/000000.mp4", b"chunk bytes")
    (tmp_path / "q.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + 7)))
    (tmp_path / "r.jpg").write_bytes(jpeg_bytes(face_image(unique_seed + 8)))
    queued = ingest_file(settings, tmp_path / "q.jpg")
    running = ingest_file(settings, tmp_path / "r.jpg")
    with db.transaction(settings) as conn:  # a worker has claimed it and is redacting
        assert ledger.claim_job(conn, running.job_id, "worker@test", 600) is not None  # type: ignore[arg-type]
    raw_keys = {str(r["id"]): r["raw_key"]
                for r in rows(settings, "SELECT id, raw_key FROM sources")}
    exported = veil("export", erased_id, "-o", str(tmp_path / "exported"))
    assert exported.returncode == 0, exported.stderr
    assert len(source_versions(admin, settings, erased_id, raw_keys[erased_id])) >= 3
    review = veil("review", "--done", erased_id, "--note", "the man in the red coat", "--by", "dpo")
    assert review.returncode == 0, review.stderr

    # when the three are erased
    targets = [erased_id, str(queued.source_id), str(running.source_id)]
    run = veil("erase", *targets, "--reason", "request 42: consent withdrawn", "--now")

    # then the receipt lists every object with its versions and time
    assert run.returncode == 0, run.stdout + run.stderr
    receipts = {r["source_id"]: r for r in json.loads(run.stdout)}
    first = receipts[erased_id]
    objects = {(o["bucket"], o["key"]) for o in first["objects"]}
    assert (settings.s3.bucket_raw, raw_keys[erased_id]) in objects
    assert (settings.s3.bucket_work, chunk.key) in objects
    assert any(b == settings.s3.bucket_redacted for b, _ in objects)
    assert all(o["versions"] and o["deleted_at"] for o in first["objects"])
    assert first["key_destroyed"] is True and first["failed"] == []
    assert [e["action"] for e in first["exports_on_record"]] == ["export"]
    assert receipts[str(queued.source_id)]["jobs_cancelled"] == [str(queued.job_id)]
    assert receipts[str(running.source_id)]["jobs_cancelled"] == [str(running.job_id)]
    # and no version of any of their objects is left in any bucket
    for sid in targets:
        assert source_versions(admin, settings, sid, raw_keys[sid]) == [], sid
    # and their jobs are cancelled: a worker about to publish sees it
    states = {r["source_id"]: r["state"] for r in rows(
        settings, "SELECT source_id, state FROM jobs WHERE source_id = ANY(%s)",
        [queued.source_id, running.source_id])}
    assert set(states.values()) == {"cancelled"}
    with db.transaction(settings) as conn:
        assert ledger.job_cancelled(conn, running.job_id)  # type: ignore[arg-type]
        with pytest.raises(keyring.KeyDestroyedError):
            keyring.load_key(conn, erased_id)
    # and the ledger keeps a tombstone without personal data, detections gone, audit kept
    tomb = rows(settings, "SELECT * FROM sources WHERE id = %s", erased_id)[0]
    assert tomb["erased_at"] is not None and tomb["original_name"] == "erased"
    assert tomb["camera"] is None and tomb["captured_at"] is None and tomb["sha256"]
    assert rows(settings, "SELECT d.id FROM detections d JOIN jobs j ON j.id = d.job_id"
                " WHERE j.source_id = %s", erased_id) == []
    assert rows(settings, "SELECT id FROM reviews WHERE source_id = %s", erased_id) == []
    actions = [r["action"] for r in rows(settings, "SELECT action FROM audit_events"
                                         " WHERE source_id = %s ORDER BY id", erased_id)]
    assert actions[0] == "ingest" and actions[-1] == "erase"
    # and the untouched source still has its original and output
    assert len(source_versions(admin, settings, kept_id, raw_keys[kept_id])) == 2
    # and the same bytes offered again are refused as erased
    again = veil("ingest", str(done_dir / "p0.jpg"), "--json")
    assert json.loads(again.stdout)["sources"][0]["state"] == "erased"


def test_erase_errors_name_the_source(clean_ledger: Settings, tmp_path: Path,
                                      unique_seed: int) -> None:
    import uuid
    unknown = uuid.uuid4()
    with pytest.raises(RightsError, match=f"no source {unknown}"):
        erase_source(clean_ledger, unknown, "why", "operator:test")
    run = veil("erase", "not-an-id", "--reason", "x", "--now")
    assert run.returncode == 2 and "not-an-id" in run.stderr
    # erasing twice is allowed: it reports the earlier erasure and retries what is left
    (tmp_path / "e.jpg").write_bytes(jpeg_bytes(face_image(unique_seed)))
    src = ingest_file(clean_ledger, tmp_path / "e.jpg")
    erase_source(clean_ledger, src.source_id, "first", "operator:test")  # type: ignore[arg-type]
    second = erase_source(clean_ledger, src.source_id, "again", "operator:test")  # type: ignore[arg-type]
    assert second["already_erased"] is True and second["key_destroyed"] is False
    assert all(o["versions"] == [] for o in second["objects"])
    raw = rows(clean_ledger, "SELECT raw_bucket, raw_key FROM sources WHERE id = %s",
               src.source_id)[0]
    assert list_all_versions(client_for("admin", clean_ledger), raw["raw_bucket"],
                             raw["raw_key"]) == []
