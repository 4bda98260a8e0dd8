"""`veil retry` from outside, against the real services: a failed job is re-queued, audited
with the operator's login, and runs to success on a real worker; jobs that are not failed, of
erased sources, or unknown are refused with a reason and exit 1; a bad id is a usage error."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from infra import db, ledger
from infra.settings import Settings
from producer.ingest import IngestResult, wait_for
from tests.conftest import face_image, jpeg_bytes
from tests.rights import ingest_file, rows, veil


def _failed_source(settings: Settings, tmp_path: Path, seed: int, name: str) -> IngestResult:
    """A source whose job failed on a cause since fixed (recorded as the worker records it)."""
    path = tmp_path / name
    path.write_bytes(jpeg_bytes(face_image(seed, size=96)))
    result = ingest_file(settings, path)
    with db.transaction(settings) as conn:
        ledger.fail_job(conn, result.job_id, "gave up after 5 attempts (transient error 5 "
                        "times): S3 unavailable", "worker@test")
    return result


def test_retry_requeues_a_failed_job_which_then_succeeds(
        clean_ledger: Settings, worker: object, tmp_path: Path, unique_seed: int) -> None:
    # given a failed job
    result = _failed_source(clean_ledger, tmp_path, unique_seed, "retry.jpg")
    # when the operator retries it
    done = veil("retry", str(result.job_id), "--json")
    # then it is re-queued, the retry is audited with the operator and the old error, and a
    # worker redacts it
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [r["job_id"] for r in out["retried"]] == [str(result.job_id)] and not out["refused"]
    assert wait_for([result.source_id], clean_ledger, 90)[result.source_id][0] == "succeeded"
    audit = rows(clean_ledger, "SELECT actor, detail FROM audit_events WHERE job_id = %s"
                 " AND action = 'job_retry'", result.job_id)
    assert len(audit) == 1 and audit[0]["actor"].startswith("operator:")
    assert "S3 unavailable" in audit[0]["detail"]["previous_error"]
    job = rows(clean_ledger, "SELECT attempts, error FROM jobs WHERE id = %s", result.job_id)[0]
    assert job == {"attempts": 1, "error": None}


def test_retry_failed_takes_every_failed_job_in_text_mode(
        clean_ledger: Settings, worker: object, tmp_path: Path, unique_seed: int) -> None:
    first = _failed_source(clean_ledger, tmp_path, unique_seed, "one.jpg")
    second = _failed_source(clean_ledger, tmp_path, unique_seed + 1, "two.jpg")
    done = veil("retry", "--failed")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "2 re-queued, 0 refused"
    assert {ln.split()[2] for ln in lines[:-1]} == {str(first.job_id), str(second.job_id)}
    ids = [first.source_id, second.source_id]
    assert {s for s, _ in wait_for(ids, clean_ledger, 90).values()} == {"succeeded"}
    # and a second --failed finds nothing to do
    again = veil("retry", "--failed", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == {"retried": [], "refused": []}


def test_retry_refuses_what_it_cannot_retry_with_reasons(
        clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> None:
    from workers.retention.erase import erase_source
    path = tmp_path / "queued.jpg"
    path.write_bytes(jpeg_bytes(face_image(unique_seed, size=96)))
    queued = ingest_file(clean_ledger, path)
    erased = _failed_source(clean_ledger, tmp_path, unique_seed + 7, "erased.jpg")
    assert erased.source_id is not None
    erase_source(clean_ledger, erased.source_id, reason="test", actor="operator:test")
    unknown = uuid.uuid4()
    # when the operator asks for a queued job, a job of an erased source and an unknown id
    done = veil("retry", str(queued.job_id), str(erased.job_id), str(unknown))
    # then each is refused with its reason, nothing changes, and the exit code says so
    assert done.returncode == 1
    out = done.stdout
    assert f"REFUSED  job {queued.job_id} is queued, not failed" in out
    assert f"REFUSED  job {erased.job_id}: source {erased.source_id} was erased at" in out
    assert f"REFUSED  no job {unknown}" in out
    assert out.splitlines()[-1] == "0 re-queued, 3 refused"
    assert not rows(clean_ledger, "SELECT 1 FROM audit_events WHERE action = 'job_retry'"
                    " AND job_id = ANY(%s)", [queued.job_id, erased.job_id])


def test_retry_usage_errors_exit_2(services: Settings) -> None:
    assert veil("retry").returncode == 2
    bad = veil("retry", "not-a-uuid")
    assert bad.returncode == 2 and "not a job id: 'not-a-uuid'" in bad.stderr
    assert veil("retry", str(uuid.uuid4()), "--failed").returncode == 2
