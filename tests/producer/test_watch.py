"""`veil watch` over the real inbox bucket (SeaweedFS: listing sweeps with a durable cursor),
PostgreSQL and Redis: uploads become sources exactly once and leave the inbox."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid

import psycopg

from infra.settings import Settings
from producer.ingest import wait_for
from tests.conftest import face_image, jpeg_bytes
from tests.rights import rows
from tests.watching import Inbox, inbox_rows, sources


def test_watch_once_ingests_two_cameras_and_removes_a_duplicate_under_another_key(
        inbox: Inbox, worker: subprocess.Popen[bytes], unique_seed: int) -> None:
    # given two cameras' uploads in the inbox, one of them uploaded again under another key
    north, south = jpeg_bytes(face_image(unique_seed)), jpeg_bytes(face_image(unique_seed + 1))
    inbox.put("gate-north/2024/a.jpg", north)
    inbox.put("gate-south/b.jpg", south)
    inbox.put("gate-south/copy-of-a.jpg", north)
    # when the watcher runs once
    run = inbox.veil("watch", "--once", "--json")
    # then both images are sources of their cameras, the copy is a reported duplicate
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["counts"] == {"ingested": 2, "duplicate": 1}
    assert [d["key"] for d in summary["duplicates"]] == [inbox.prefix + "gate-south/copy-of-a.jpg"]
    found = sources(inbox.settings)
    assert [(s["original_name"], s["camera"], s["origin"]) for s in found] == [
        ("a.jpg", "gate-north", "s3-inbox"), ("b.jpg", "gate-south", "s3-inbox")]
    assert summary["duplicates"][0]["source_id"] == str(found[0]["id"])
    # and the inbox is empty, every version gone; the ledger has one row per version
    assert inbox.emptied() == []
    assert sorted(r["outcome"] for r in inbox_rows(inbox.settings)) == [
        "duplicate", "ingested", "ingested"]
    assert all(r["released_at"] for r in inbox_rows(inbox.settings))
    # and the real worker redacts them
    states = wait_for([s["id"] for s in found], inbox.settings, timeout_s=180)
    assert {state for state, _ in states.values()} == {"succeeded"}
    # and a second run finds nothing new (text mode says so) and makes no source
    again = inbox.veil("watch", "--once")
    assert again.returncode == 0, again.stderr
    assert "inbox: nothing new" in again.stdout
    assert len(sources(inbox.settings)) == 2


def test_a_sigkilled_watcher_resumes_from_its_cursor_and_doubles_nothing(
        inbox: Inbox, unique_seed: int) -> None:
    # given 16 uploads and a watcher that is SIGKILLed in the middle of its sweep
    count = 16
    for i in range(count):
        inbox.put(f"cam/{i:02d}.jpg", jpeg_bytes(face_image(unique_seed + i, size=96)))
    proc = inbox.popen("watch", env={"VEIL_WATCH__POLL_S": "60"})
    deadline = time.monotonic() + 120
    while len(inbox_rows(inbox.settings)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done_before = len(inbox_rows(inbox.settings))
    assert 3 <= done_before < count, "the watcher finished before it could be killed"
    cursor = rows(inbox.settings, "SELECT position FROM inbox_cursors WHERE prefix = %s",
                  inbox.prefix)
    assert cursor and cursor[0]["position"].startswith(inbox.prefix + "cam/")  # kept durably
    # when it is started again
    run = inbox.veil("watch", "--once", "--json")
    # then every upload is exactly one source, none a duplicate, and the inbox is empty
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["counts"].get("duplicate", 0) == 0
    found = sources(inbox.settings)
    assert sorted(s["original_name"] for s in found) == [f"{i:02d}.jpg" for i in range(count)]
    assert sorted(r["outcome"] for r in inbox_rows(inbox.settings)) == ["ingested"] * count
    assert inbox.emptied() == []
    # and each source has exactly one job and one outbox row (nothing queued twice)
    jobs = rows(inbox.settings, "SELECT source_id, count(*) AS n FROM jobs GROUP BY source_id")
    assert len(jobs) == count and {j["n"] for j in jobs} == {1}
    assert rows(inbox.settings, "SELECT count(*) AS n FROM outbox")[0]["n"] == count


def test_the_watcher_pauses_while_the_job_queue_is_deeper_than_the_setting(
        inbox: Inbox, settings: Settings, unique_seed: int) -> None:
    import redis
    # given three uploads, a queue that nobody consumes and a depth limit of one job
    for i in range(3):
        inbox.put(f"cam/{i}.jpg", jpeg_bytes(face_image(unique_seed + i, size=96)))
    prefix = f"{settings.broker.queue_prefix}-bp{uuid.uuid4().hex[:6]}"
    queue = redis.Redis.from_url(settings.broker.url)
    env = {"VEIL_WATCH__MAX_QUEUE_DEPTH": "1", "VEIL_BROKER__QUEUE_PREFIX": prefix}
    proc = inbox.popen("watch", "--once", "--json", env=env)
    try:
        # when two jobs are queued the watcher stops ingesting and says it paused
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _paused(inbox):
            time.sleep(0.1)
        assert _paused(inbox), "the watcher never paused"
        time.sleep(2.0)
        assert len(sources(inbox.settings)) == 2 and queue.llen(f"{prefix}.images") == 2
        status = json.loads(inbox.veil("status", "--json").stdout)
        assert status["watch"]["paused"] is True
        assert "PAUSED" in inbox.veil("status").stdout
        # then, once the queue drains, it resumes and finishes
        queue.delete(f"{prefix}.images")
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
        queue.delete(f"{prefix}.images")
    assert proc.returncode == 0, err
    assert json.loads(out)["counts"] == {"ingested": 3}
    assert "paused: 2 jobs queued, above 1" not in out  # --json keeps stdout to the summary
    assert len(sources(inbox.settings)) == 3 and inbox.emptied() == []


def _paused(inbox: Inbox) -> bool:
    with psycopg.connect(inbox.settings.db.url) as conn:
        row = conn.execute("SELECT paused FROM inbox_cursors WHERE prefix = %s",
                           (inbox.prefix,)).fetchone()
    return bool(row and row[0])


def test_a_camera_with_the_uploader_credential_can_only_put_and_its_upload_is_redacted(
        inbox: Inbox, worker: subprocess.Popen[bytes], unique_seed: int) -> None:
    import io

    import pytest
    from minio.error import S3Error

    from infra.objectstore import client_for
    # given a camera holding only the uploader credential
    camera = client_for("uploader", inbox.settings)
    key, data = inbox.prefix + "gate/upload.jpg", jpeg_bytes(face_image(unique_seed))
    # when it uploads the way any S3 client does
    camera.put_object(inbox.bucket, key, io.BytesIO(data), len(data), content_type="image/jpeg")
    # then it can neither list, read nor delete anything in the inbox
    for refused in (lambda: list(camera.list_objects(inbox.bucket, prefix=inbox.prefix)),
                    lambda: camera.get_object(inbox.bucket, key).read(),
                    lambda: camera.remove_object(inbox.bucket, key)):
        with pytest.raises(S3Error) as caught:
            refused()
        assert caught.value.code == "AccessDenied"
    # and the watcher ingests the upload, the worker redacts it, the inbox ends empty
    run = inbox.veil("watch", "--once", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["counts"] == {"ingested": 1}
    found = sources(inbox.settings)
    states = wait_for([s["id"] for s in found], inbox.settings, timeout_s=180)
    assert [state for state, _ in states.values()] == ["succeeded"]
    assert inbox.emptied() == []
