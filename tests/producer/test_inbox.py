"""The inbox lifecycle and the retention worker, end to end through the CLI and real services.

An upload ingested from the inbox is deleted there (every version, with a receipt) once its raw
copy is committed; erasure is carried out by the retention worker from a recorded request;
`veil export` names outputs by source id and skips what was erased."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from infra.objectstore import client_for, delete_all_versions, list_all_versions, put_bytes
from infra.settings import Settings
from tests.conftest import face_image, jpeg_bytes
from tests.rights import rows, veil
from workers.retention.erase import carry_out


@pytest.fixture()
def inbox_prefix(clean_ledger: Settings) -> Iterator[str]:
    prefix = f"test-inbox-{uuid.uuid4().hex[:12]}/"
    yield prefix
    admin = client_for("admin", clean_ledger)
    for key in {k for k, _ in list_all_versions(admin, clean_ledger.s3.bucket_inbox, prefix)}:
        delete_all_versions(admin, clean_ledger.s3.bucket_inbox, key)


def _upload(settings: Settings, prefix: str, names: list[str], seed: int) -> Minio:
    """Two versions of each upload, as a camera re-sending a file would leave."""
    admin = client_for("admin", settings)
    for i, name in enumerate(names):
        put_bytes(admin, settings.s3.bucket_inbox, prefix + name, b"an older upload")
        put_bytes(admin, settings.s3.bucket_inbox, prefix + name,
                  jpeg_bytes(face_image(seed + i)), "image/jpeg")
    return admin


def _wait_for_empty_inbox(settings: Settings, admin: Minio, prefix: str) -> None:
    import time
    deadline = time.monotonic() + 60
    while list_all_versions(admin, settings.s3.bucket_inbox, prefix):
        assert time.monotonic() < deadline, "the retention worker did not empty the inbox"
        time.sleep(0.3)


def test_inbox_is_emptied_after_ingest_erased_outputs_are_skipped_on_export(
    clean_ledger: Settings, worker: object, retention_worker: object, inbox_prefix: str,
    unique_seed: int, tmp_path: Path
) -> None:
    # given two uploads in the inbox (two versions each)
    admin = _upload(clean_ledger, inbox_prefix, ["jane_doe_passport.jpg", "gate.jpg"],
                    unique_seed)

    # when they are ingested from the inbox and redacted
    run = veil("ingest", f"s3://{clean_ledger.s3.bucket_inbox}/{inbox_prefix}", "--wait",
               "--json", "--timeout", "120")
    assert run.returncode == 0, run.stdout + run.stderr
    ids = {s["file"]: s["source_id"] for s in json.loads(run.stdout)["sources"]}

    # then the retention worker deletes every version of both uploads, with receipts
    _wait_for_empty_inbox(clean_ledger, admin, inbox_prefix)
    tasks = rows(clean_ledger, "SELECT key, state, receipt FROM deletion_tasks WHERE bucket = %s",
                 clean_ledger.s3.bucket_inbox)
    assert {t["key"] for t in tasks} == {inbox_prefix + "jane_doe_passport.jpg",
                                         inbox_prefix + "gate.jpg"}
    assert all(t["state"] == "done" and len(t["receipt"]["versions"]) == 2 for t in tasks)
    recorded = rows(clean_ledger, "SELECT inbox_key, inbox_version_id FROM sources")
    assert all(r["inbox_key"].startswith(inbox_prefix) and r["inbox_version_id"]
               for r in recorded)

    # when one source is erased through the retention worker
    erased = ids["jane_doe_passport.jpg"]
    gone = veil("erase", erased, "--reason", "request 7", "--timeout", "60")
    assert gone.returncode == 0, gone.stdout + gone.stderr
    receipt = json.loads(gone.stdout)[0]
    assert receipt["source_id"] == erased and receipt["key_destroyed"] is True
    assert (clean_ledger.s3.bucket_inbox, inbox_prefix + "jane_doe_passport.jpg") in {
        (o["bucket"], o["key"]) for o in receipt["objects"]}

    # then export --all skips it, says so, exits 0, and names the other by its source id
    exported = veil("export", "--all", "-o", str(tmp_path / "out"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "1 skipped (erased or purged)" in exported.stdout
    assert [p.name for p in (tmp_path / "out").iterdir()] == [f"{ids['gate.jpg']}.jpg"]

    # and original names are an audited opt-in
    named = veil("export", ids["gate.jpg"], "--names", "original", "-o", str(tmp_path / "n"))
    assert named.returncode == 0, named.stderr
    assert [p.name for p in (tmp_path / "n").iterdir()] == ["gate.jpg"]
    audit = rows(clean_ledger, "SELECT detail FROM audit_events WHERE action = 'export'"
                 " AND source_id = %s ORDER BY id", ids["gate.jpg"])
    assert [a["detail"]["names"] for a in audit] == ["source-id", "original"]


def test_an_erasure_empties_the_inbox_before_any_purge(
    clean_ledger: Settings, inbox_prefix: str, unique_seed: int
) -> None:
    # given an inbox upload ingested (a retention worker of another test may already have
    # deleted it: the erasure must leave nothing either way)
    admin = _upload(clean_ledger, inbox_prefix, ["visitor.jpg"], unique_seed)
    run = veil("ingest", f"s3://{clean_ledger.s3.bucket_inbox}/{inbox_prefix}", "--json")
    assert run.returncode == 0, run.stderr
    source_id = json.loads(run.stdout)["sources"][0]["source_id"]

    # when it is erased
    gone = veil("erase", source_id, "--reason", "consent withdrawn", "--now")

    # then no version of the upload is left, and the receipt names it
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert list_all_versions(admin, clean_ledger.s3.bucket_inbox, inbox_prefix) == []
    objects = {(o["bucket"], o["key"]) for o in json.loads(gone.stdout)[0]["objects"]}
    assert (clean_ledger.s3.bucket_inbox, inbox_prefix + "visitor.jpg") in objects


def test_only_the_inbox_is_accepted_as_an_s3_source(clean_ledger: Settings) -> None:
    run = veil("ingest", f"s3://{clean_ledger.s3.bucket_raw}/objects/")

    assert run.returncode != 0
    assert "only the inbox bucket" in run.stderr and "Traceback" not in run.stderr
    assert rows(clean_ledger, "SELECT id FROM sources") == []


def test_an_erase_task_without_a_recorded_request_does_nothing(
    clean_ledger: Settings, as_role: object, unique_seed: int, tmp_path: Path
) -> None:
    from tests.rights import ingest_file
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(face_image(unique_seed)))
    source = ingest_file(clean_ledger, tmp_path / "a.jpg")
    retention = clean_ledger.for_db_role("retention")

    # a task sent by hand, with a source id or a made-up request id, erases nothing
    assert carry_out(retention, str(source.source_id)) is None
    assert carry_out(retention, "not-a-uuid") is None
    assert rows(clean_ledger, "SELECT erased_at FROM sources")[0]["erased_at"] is None
