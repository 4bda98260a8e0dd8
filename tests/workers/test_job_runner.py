"""The job runner's order (invariant 1), against the real services, with steps of the test's
own: the raw read is audited with the claim, nothing is published when processing fails, a job
erased while it ran publishes nothing, and a finished job is done with its output recorded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from infra import db, jobs, ledger
from infra.db import Conn
from infra.objectstore import client_for, object_exists
from infra.settings import Settings
from producer.ingest import IngestResult
from schemas.keys import redacted_key
from schemas.policy import Policy
from tests.rights import ingest_file, rows
from tests.unrecorded import face_photo
from workers.job_runner import Claimed, JobSteps, Output, Published, RawRead, run_job

OUTPUT = b"a redacted output"


@dataclass(frozen=True)
class Steps(JobSteps[str, int]):
    """Publishes :data:`OUTPUT` under the source's redacted key; ``during`` runs in process."""

    settings: Settings
    raw: RawRead | None = RawRead({"purpose": "test"})
    during: Callable[[Claimed[str]], None] | None = None
    calls: list[str] = field(default_factory=list)

    def load(self, conn: Conn, job: ledger.JobContext, policy: Policy) -> str:
        self.calls.append("load")
        return f"loaded {job.job_id}"

    def reads_raw(self, policy: Policy) -> RawRead | None:
        return self.raw

    def process(self, claimed: Claimed[str], s3: Minio) -> Output[int]:
        self.calls.append("process")
        if self.during:
            self.during(claimed)
        return Output(self.settings.s3.bucket_redacted, redacted_key(claimed.job.source_id, "txt"),
                      OUTPUT, "text/plain", work=len(OUTPUT), timings={"fetch_s": 0.0},
                      audit_detail={"bytes": len(OUTPUT)}, frames=3)

    def record(self, conn: Conn, claimed: Claimed[str], output: Output[int],
               published: Published) -> None:
        self.calls.append("record")
        ledger.schedule_output_deletion(conn, claimed.job.source_id, published.stored.bucket,
                                        published.stored.key, 3600, "test")

    def finished(self, conn: Conn, claimed: Claimed[str]) -> Callable[[], object]:
        self.calls.append("finished")
        return lambda: self.calls.append(f"committed: {_state(self.settings, claimed)}")


def _state(settings: Settings, claimed: Claimed[str]) -> str:
    """The job's state as another connection sees it (committed rows only)."""
    return str(rows(settings, "SELECT state FROM jobs WHERE id = %s",
                    claimed.job.job_id)[0]["state"])


def _events(settings: Settings, job_id: object) -> list[tuple[str, dict[str, Any]]]:
    """The audit events of the job's run, in order (the ingest's, which names the job, left
    out)."""
    return [(r["action"], r["detail"]) for r in rows(
        settings, "SELECT action, detail FROM audit_events WHERE job_id = %s"
        " AND action <> 'ingest' ORDER BY id", job_id)]


@pytest.fixture()
def queued(clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> IngestResult:
    return ingest_file(clean_ledger, face_photo(tmp_path, "job.jpg", unique_seed))


def test_a_job_is_done_only_with_its_output_recorded(clean_ledger: Settings,
                                                     queued: IngestResult) -> None:
    steps = Steps(clean_ledger)
    # when the job runs, and is delivered once more
    assert run_job(str(queued.job_id), clean_ledger, "runner@test", steps) == "succeeded"
    assert run_job(str(queued.job_id), clean_ledger, "runner@test", steps) == "skipped"
    # then the steps ran once each, in order, and the after-commit step saw the job done
    assert steps.calls == ["load", "process", "record", "finished", "committed: succeeded"]
    key = redacted_key(queued.source_id, "txt")  # type: ignore[arg-type]
    deadlines = rows(clean_ledger, "SELECT reason FROM deletion_tasks WHERE key = %s", key)
    assert [d["reason"] for d in deadlines] == ["policy test: redacted retention"]
    events = _events(clean_ledger, queued.job_id)
    assert [a for a, _ in events] == ["raw_read", "output_write"]
    assert events[0][1] == {"purpose": "test"}
    assert events[1][1]["bytes"] == len(OUTPUT) and len(events[1][1]["sha256"]) == 64
    job = rows(clean_ledger, "SELECT state, frames_done, attempts FROM jobs WHERE id = %s",
               queued.job_id)[0]
    assert (job["state"], job["frames_done"], job["attempts"]) == ("succeeded", 3, 1)
    assert object_exists(client_for("admin", clean_ledger), clean_ledger.s3.bucket_redacted, key)


def test_a_job_that_fails_in_processing_publishes_nothing(clean_ledger: Settings,
                                                          queued: IngestResult) -> None:
    def fail(claimed: Claimed[str]) -> None:
        raise RuntimeError("the detector broke")

    steps = Steps(clean_ledger, raw=None, during=fail)
    with pytest.raises(RuntimeError, match="the detector broke"):
        run_job(str(queued.job_id), clean_ledger, "runner@test", steps)
    # the claim stands (the task's retry policy decides what comes next); nothing was written
    assert steps.calls == ["load", "process"]
    assert rows(clean_ledger, "SELECT state FROM jobs WHERE id = %s",
                queued.job_id)[0]["state"] == "running"
    assert _events(clean_ledger, queued.job_id) == []  # and no raw read: these steps read none
    key = redacted_key(queued.source_id, "txt")  # type: ignore[arg-type]
    assert not object_exists(client_for("admin", clean_ledger), clean_ledger.s3.bucket_redacted,
                             key)


def test_a_job_erased_while_it_ran_publishes_nothing(clean_ledger: Settings,
                                                     queued: IngestResult) -> None:
    def erase(claimed: Claimed[str]) -> None:
        with db.transaction(clean_ledger) as conn:
            jobs.cancel_source_jobs(conn, claimed.job.source_id, "erased by the test")

    steps = Steps(clean_ledger, during=erase)
    assert run_job(str(queued.job_id), clean_ledger, "runner@test", steps) == "cancelled"
    # then nothing is recorded or finished, and the output just written is due for deletion now
    assert steps.calls == ["load", "process"]
    key = redacted_key(queued.source_id, "txt")  # type: ignore[arg-type]
    tasks = rows(clean_ledger, "SELECT reason, due_at <= now() AS due FROM deletion_tasks"
                 " WHERE key = %s", key)
    assert [(t["reason"], t["due"]) for t in tasks] == [("output of a cancelled job", True)]
    assert [a for a, _ in _events(clean_ledger, queued.job_id)] == ["raw_read"]
    assert rows(clean_ledger, "SELECT state FROM jobs WHERE id = %s",
                queued.job_id)[0]["state"] == "cancelled"
