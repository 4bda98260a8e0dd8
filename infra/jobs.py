"""The jobs table's one writer: creation, claim, leases, attempts by cause, finish or failure,
dead letters, the sweep, stalled jobs, cancellation on erasure and an operator's retry (part of
the ledger; ``infra.ledger`` re-exports the functions the workers call).

PostgreSQL is the truth (invariant 2). A running job holds a short lease that the worker renews
by heartbeat; a job whose lease ran out lost its worker and is re-queued, or failed once it used
its attempts. Every attempt that did not finish is counted by its cause in ``attempt_causes``,
so the give-up reason says what happened ("worker lost 3 times, transient error twice") instead
of guessing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from infra.db import Conn
from infra.ledger_audit import audit
from schemas import messages
from schemas.enums import AuditAction, JobKind, JobState
from schemas.keys import job_id_for

# What ended an attempt (or re-sent a job), as stored in jobs.attempt_causes, and how it reads.
CAUSES: dict[str, str] = {
    "worker_lost": "worker lost (lease expired)",
    "redelivered": "re-delivered while running (pool child killed, or duplicate delivery)",
    "transient": "transient error",
    "error": "unexpected error",
    "resent": "re-sent after waiting in the queue",
}


def describe_causes(causes: dict[str, int]) -> str:
    """``{"worker_lost": 3, "transient": 1}`` -> "worker lost (lease expired) 3 times, ..."."""
    parts = []
    for cause, label in CAUSES.items():
        n = int(causes.get(cause, 0))
        if n:
            parts.append(f"{label} {'once' if n == 1 else f'{n} times'}")
    return ", ".join(parts) or "no cause recorded"


def give_up_reason(attempts: int, causes: dict[str, int], last_error: str | None = None) -> str:
    """The error a job gives up with: its attempts, their causes with counts, the last error."""
    text = f"gave up after {attempts} attempts ({describe_causes(causes)})"
    return f"{text}: {last_error}" if last_error else text


def renew_lease(conn: Conn, job_id: uuid.UUID | str, worker: str, lease_s: int) -> bool:
    """Extend a running job's lease; False when the job is no longer running under ``worker``
    (it finished, failed, or another worker claimed it): the heartbeat then stops."""
    row = conn.execute(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND state = 'running' AND worker = %s RETURNING id",
        (lease_s, job_id, worker)).fetchone()
    return row is not None


def requeue_for_retry(conn: Conn, job_id: uuid.UUID | str, cause: str) -> None:
    """A task is about to retry its job after an error: count the cause and mark it queued, so
    that the retry's claim is not mistaken for a re-delivery and no lease is left to expire."""
    conn.execute(
        f"UPDATE jobs SET state = 'queued', attempt_causes = {count_cause_sql(cause)},"
        " lease_expires_at = NULL, enqueued_at = now(), updated_at = now()"
        " WHERE id = %s AND state = 'running'", (job_id,))


def attempts_of(conn: Conn, job_id: uuid.UUID | str) -> tuple[int, dict[str, int]]:
    row = conn.execute("SELECT attempts, attempt_causes FROM jobs WHERE id = %s",
                       (job_id,)).fetchone()
    return (row["attempts"], dict(row["attempt_causes"])) if row else (0, {})


def _count_cause(conn: Conn, job_id: uuid.UUID | str, causes: dict[str, int],
                 cause: str) -> dict[str, int]:
    """``causes`` (the job's, as read) with ``cause`` counted once more, stored on the job."""
    counted = {**causes, cause: int(causes.get(cause, 0)) + 1}
    conn.execute("UPDATE jobs SET attempt_causes = %s WHERE id = %s", (Jsonb(counted), job_id))
    return counted


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to run a job, loaded by id (task arguments carry nothing else)."""

    job_id: uuid.UUID
    source_id: uuid.UUID
    kind: str
    state: str
    attempts: int
    raw_bucket: str
    raw_key: str
    raw_version_id: str | None
    source_sha256: str
    policy: dict[str, Any]


_JOB_CONTEXT_SQL = """
SELECT j.id AS job_id, j.source_id, j.kind, j.state, j.attempts, s.raw_bucket, s.raw_key,
       s.raw_version_id, s.sha256 AS source_sha256, s.policy
FROM jobs j JOIN sources s ON s.id = j.source_id WHERE j.id = %s
"""


def load_job(conn: Conn, job_id: uuid.UUID | str) -> JobContext | None:
    row = conn.execute(_JOB_CONTEXT_SQL, (job_id,)).fetchone()
    return JobContext(**row) if row else None  # type: ignore[arg-type]


def count_cause_sql(cause: str, when: str = "true") -> str:
    """SQL for ``jobs.attempt_causes`` with ``cause`` counted once more (only ``when`` holds);
    ``cause`` is one of ``infra.jobs.CAUSES`` (a constant, never user input)."""
    return (f"CASE WHEN {when} THEN jsonb_set(attempt_causes, '{{{cause}}}',"
            f" to_jsonb(coalesce((attempt_causes->>'{cause}')::int, 0) + 1))"
            " ELSE attempt_causes END")


_COUNT_REDELIVERY = count_cause_sql("redelivered", when="state = 'running'")
_RUNNING, _CANCELLED = str(JobState.RUNNING), str(JobState.CANCELLED)


def claim_job(
    conn: Conn, job_id: uuid.UUID | str, worker: str, lease_s: int
) -> JobContext | None:
    """Mark a queued (or lease-expired, re-delivered) job running; None when it is finished.

    A re-delivered job that is still `running` is claimed again: at-least-once delivery means
    a duplicate may run, and deterministic keys plus upserts make that harmless. Such a claim
    counts the attempt it ends as ``redelivered`` (a killed pool child's task comes back at once;
    retries and the sweeper set the job `queued` first, with their own cause).
    """
    row = conn.execute(
        "UPDATE jobs SET state = %s, attempts = attempts + 1, worker = %s,"
        f" attempt_causes = {_COUNT_REDELIVERY},"
        " lease_expires_at = now() + make_interval(secs => %s),"
        " started_at = now(), updated_at = now()"
        " WHERE id = %s AND state IN (%s, %s) RETURNING id",
        (_RUNNING, worker, lease_s, job_id, str(JobState.QUEUED), _RUNNING),
    ).fetchone()
    if row is None:
        return None
    return load_job(conn, job_id)


def fail_job(conn: Conn, job_id: uuid.UUID | str, reason: str, actor: str) -> None:
    row = conn.execute(
        "UPDATE jobs SET state = %s, error = %s, finished_at = now(), updated_at = now(),"
        " lease_expires_at = NULL WHERE id = %s AND state NOT IN (%s, %s) RETURNING source_id",
        (str(JobState.FAILED), reason, job_id, str(JobState.SUCCEEDED), _CANCELLED),
    ).fetchone()
    if row:
        audit(conn, actor, AuditAction.JOB_FAILED, source_id=row["source_id"], job_id=job_id,
              detail={"reason": reason})


@dataclass(frozen=True)
class DeadLetter:
    """One job given up on: which task, why, after how many attempts, and (when retries ran
    out) the last attempt's cause, which is added to the counts the give-up reason names."""

    job_id: str
    task_name: str
    reason: str
    attempts: int
    cause: str | None = None


def dead_letter(conn: Conn, letter: DeadLetter, actor: str) -> None:
    """Fail the job and keep a dead letter, in the caller's transaction; with ``cause`` (the
    last attempt's), the reason becomes the give-up reason naming every attempt's cause with
    its count, and the attempts are the job's own count."""
    reason, attempts = letter.reason, letter.attempts
    if letter.cause is not None:
        attempts, causes = attempts_of(conn, letter.job_id)
        causes = _count_cause(conn, letter.job_id, causes, letter.cause)
        reason = give_up_reason(attempts, causes, reason)
    fail_job(conn, letter.job_id, reason, actor)
    conn.execute(
        "INSERT INTO dead_letters (job_id, task_name, error, attempts) VALUES (%s,%s,%s,%s)",
        (letter.job_id, letter.task_name, reason, attempts))


def job_cancelled(conn: Conn, job_id: uuid.UUID | str) -> bool:
    """Lock the job row and tell whether it was cancelled (its source erased meanwhile).

    Call first in the transaction that publishes a job's output: erasure cancels jobs under the
    same row lock, so either the erasure sees the recorded output and deletes it, or the worker
    sees the cancellation and removes what it just wrote.
    """
    row = conn.execute("SELECT state FROM jobs WHERE id = %s FOR UPDATE", (job_id,)).fetchone()
    return row is None or row["state"] == _CANCELLED


def finish_job(conn: Conn, job_id: uuid.UUID | str) -> None:
    conn.execute(
        "UPDATE jobs SET state = %s, error = NULL, finished_at = now(), updated_at = now(),"
        " lease_expires_at = NULL WHERE id = %s AND state <> %s",
        (str(JobState.SUCCEEDED), job_id, _CANCELLED),
    )


def record_job_progress(conn: Conn, job_id: uuid.UUID | str, frames_done: int) -> None:
    conn.execute("UPDATE jobs SET frames_done = %s, updated_at = now() WHERE id = %s"
                 " AND state = %s", (frames_done, job_id, _RUNNING))


def enqueue_assembly_if_last(conn: Conn, source_id: uuid.UUID | str,
                             task_name: str) -> tuple[int, str, str] | None:
    """Call in the transaction that finishes a chunk: when every chunk of the source succeeded,
    mark its assemble job enqueued and write its outbox row, exactly once.

    Atomic without a Celery chord: the assemble row is locked first, so two chunks finishing
    at once are serialised, and the second one's count (a new statement, so a fresh snapshot
    under READ COMMITTED) sees the first one's commit. ``enqueued_at IS NULL`` makes a chunk
    that runs twice harmless. Returns the outbox row to send after commit.
    """
    assembly = conn.execute(
        "SELECT id, enqueued_at FROM jobs WHERE source_id = %s AND kind = %s"
        " AND state = %s FOR UPDATE",
        (source_id, str(JobKind.ASSEMBLE), str(JobState.QUEUED))).fetchone()
    if assembly is None or assembly["enqueued_at"] is not None:
        return None
    pending = conn.execute(
        "SELECT count(*) AS n FROM jobs WHERE source_id = %s AND kind = %s AND state <> %s",
        (source_id, str(JobKind.CHUNK), str(JobState.SUCCEEDED))).fetchone()
    if pending is None or pending["n"]:
        return None
    conn.execute("UPDATE jobs SET enqueued_at = now(), updated_at = now() WHERE id = %s",
                 (assembly["id"],))
    outbox_id = conn.execute(
        "INSERT INTO outbox (job_id, task_name) VALUES (%s, %s) RETURNING id",
        (assembly["id"], task_name)).fetchone()["id"]  # type: ignore[index]
    return outbox_id, task_name, str(assembly["id"])


@dataclass(frozen=True)
class SweepResult:
    requeued: list[tuple[int, str, str]]  # outbox rows to send: (outbox id, task, job id)
    gave_up: list[str]  # job ids failed after their last attempt


def sweep_expired(conn: Conn, max_attempts: int, requeue_after_s: int,
                  actor: str) -> SweepResult:
    """One sweep, in the caller's transaction: every running job whose lease expired counts a
    lost worker and is re-queued, or failed when it used its attempts; every queued job that
    waited ``requeue_after_s`` is re-sent. Rows locked by a live claim are skipped."""
    expired = conn.execute(
        "SELECT id, kind, attempts, attempt_causes FROM jobs WHERE state = 'running'"
        " AND lease_expires_at < now() FOR UPDATE SKIP LOCKED").fetchall()
    requeue: list[tuple[str, str]] = []
    gave_up: list[str] = []
    for job in expired:
        causes = _count_cause(conn, job["id"], dict(job["attempt_causes"]), "worker_lost")
        if job["attempts"] >= max_attempts:
            fail_job(conn, job["id"], give_up_reason(job["attempts"], causes), actor)
            gave_up.append(str(job["id"]))
        else:
            requeue.append((str(job["id"]), job["kind"]))
    if requeue:
        conn.execute("UPDATE jobs SET state = 'queued', lease_expires_at = NULL,"
                     " enqueued_at = now(), updated_at = now() WHERE id = ANY(%s)",
                     ([uuid.UUID(j) for j, _ in requeue],))
    waited = conn.execute(
        f"UPDATE jobs SET enqueued_at = now(), attempt_causes = {count_cause_sql('resent')}"
        " WHERE id IN (SELECT id FROM jobs WHERE state = 'queued'"
        "  AND enqueued_at < now() - make_interval(secs => %s) FOR UPDATE SKIP LOCKED)"
        " RETURNING id, kind", (requeue_after_s,)).fetchall()
    requeue.extend((str(r["id"]), r["kind"]) for r in waited)
    return SweepResult(add_outbox_rows(conn, requeue), gave_up)


def add_outbox_rows(conn: Conn, jobs: list[tuple[str, str]]) -> list[tuple[int, str, str]]:
    """The outbox rows of jobs, (job id, job kind) each, sent after commit: the one writer of
    job tasks' outbox rows (new jobs, the sweep's re-queues, an operator's retry); returns
    (outbox id, task name, job id) for each."""
    rows = []
    for job_id, kind in jobs:
        task = messages.TASK_FOR_JOB_KIND[kind]
        outbox_id = conn.execute("INSERT INTO outbox (job_id, task_name) VALUES (%s, %s)"
                                 " RETURNING id", (job_id, task)).fetchone()["id"]  # type: ignore[index]
        rows.append((outbox_id, task, job_id))
    return rows


def stalled_jobs(conn: Conn, requeue_after_s: int, limit: int = 50) -> list[dict[str, Any]]:
    """Running jobs whose lease expired (their worker is presumed lost) and queued jobs that
    waited longer than ``requeue_after_s``, oldest stall first: ``stalled_s`` counts from the
    lease's end or from the end of the allowed wait, ``age_s`` from the claim (or enqueue).

    The sweeper acts on exactly these; seeing them in `veil status` for longer than a sweep
    interval means no sweeper runs (is `veil beat` up, and a worker on the maintenance queue?).
    """
    rows = conn.execute(
        "WITH stuck AS (SELECT *, CASE WHEN state = 'running' THEN lease_expires_at"
        "  ELSE enqueued_at + make_interval(secs => %s) END AS since FROM jobs"
        "  WHERE state IN ('running', 'queued'))"
        " SELECT id, source_id, kind, chunk_index, state, attempts, attempt_causes, worker,"
        " since, extract(epoch FROM now() - since) AS stalled_s,"
        " extract(epoch FROM now() - coalesce(started_at, enqueued_at)) AS age_s"
        " FROM stuck WHERE since < now() ORDER BY since LIMIT %s",
        (requeue_after_s, limit)).fetchall()
    return [{"job_id": str(r["id"]), "source_id": str(r["source_id"]), "kind": r["kind"],
             "chunk_index": r["chunk_index"], "state": r["state"],
             "why": "lease expired" if r["state"] == JobState.RUNNING else "queued too long",
             "stalled_s": round(float(r["stalled_s"]), 1), "age_s": round(float(r["age_s"]), 1),
             "attempts": r["attempts"], "attempt_causes": dict(r["attempt_causes"]),
             "worker": r["worker"]} for r in rows]


@dataclass(frozen=True)
class RetryOutcome:
    job_id: str
    source_id: str | None
    retried: bool
    message: str


def retry_failed_jobs(conn: Conn, job_ids: list[uuid.UUID] | None, actor: str
                      ) -> tuple[list[RetryOutcome], list[tuple[int, str, str]]]:
    """Re-queue failed jobs (``job_ids``, or every failed job when None), in the caller's
    transaction: one audit event per job, with the actor and the attempts it had.

    Refused, with a reason: an unknown id, a job that is not failed, a job of an erased source,
    a job whose original was already deleted. A video is retried as a whole: every failed job of
    its source (chunks and the assembly) is re-queued, and the assembly is sent when its last
    chunk finishes. Returns the outcomes and the outbox rows to send after commit.
    """
    where, params = ("j.id = ANY(%s)", [job_ids]) if job_ids is not None \
        else ("j.state = 'failed'", [])
    found = conn.execute(
        "SELECT j.id, j.source_id, j.state, s.erased_at, s.kind AS source_kind,"
        " (SELECT d.done_at FROM deletion_tasks d WHERE d.bucket = s.raw_bucket"
        "  AND d.key = s.raw_key AND d.state = 'done') AS raw_deleted_at"
        f" FROM jobs j JOIN sources s ON s.id = j.source_id WHERE {where}"
        " ORDER BY j.source_id, j.kind = 'assemble', j.chunk_index", params).fetchall()
    outcomes: list[RetryOutcome] = []
    known = {r["id"] for r in found}
    for job_id in job_ids or []:
        if job_id not in known:
            outcomes.append(RetryOutcome(str(job_id), None, False, f"no job {job_id}"))
    sources: list[uuid.UUID] = []
    for r in found:
        refusal = _refusal(r)
        if refusal:
            outcomes.append(RetryOutcome(str(r["id"]), str(r["source_id"]), False, refusal))
        elif r["source_id"] not in sources:
            sources.append(r["source_id"])
    rows: list[tuple[int, str, str]] = []
    for source_id in sources:
        retried, sent = _retry_source(conn, source_id, actor)
        outcomes.extend(retried)
        rows.extend(sent)
    return outcomes, rows


def _refusal(row: dict[str, Any]) -> str | None:
    job, source = row["id"], row["source_id"]
    if row["erased_at"] is not None:
        return f"job {job}: source {source} was erased at {row['erased_at']:%Y-%m-%d %H:%M:%S}" \
               "; nothing to retry"
    if row["raw_deleted_at"] is not None:
        return (f"job {job}: the original of source {source} was deleted at "
                f"{row['raw_deleted_at']:%Y-%m-%d %H:%M:%S} (retention); it cannot run again")
    if row["state"] != JobState.FAILED:
        return f"job {job} is {row['state']}, not failed; only failed jobs are retried"
    return None


def _retry_source(conn: Conn, source_id: uuid.UUID, actor: str
                  ) -> tuple[list[RetryOutcome], list[tuple[int, str, str]]]:
    """Re-queue every failed job of one source (locked); the assembly waits for its chunks."""
    failed = conn.execute(
        "SELECT id, kind, error, attempts, attempt_causes FROM jobs WHERE source_id = %s"
        " AND state = 'failed' ORDER BY kind = 'assemble', chunk_index FOR UPDATE",
        (source_id,)).fetchall()
    outcomes, to_send = [], []
    for job in failed:
        waits = job["kind"] == "assemble"
        conn.execute(
            "UPDATE jobs SET state = 'queued', error = NULL, attempts = 0,"
            " attempt_causes = '{}'::jsonb, lease_expires_at = NULL, worker = NULL,"
            " finished_at = NULL, updated_at = now(),"
            " enqueued_at = CASE WHEN %s THEN NULL ELSE now() END WHERE id = %s",
            (waits, job["id"]))
        audit(conn, actor, AuditAction.JOB_RETRY, source_id=source_id, job_id=job["id"],
                     detail={"previous_error": job["error"], "attempts": job["attempts"],
                             "attempt_causes": job["attempt_causes"]})
        outcomes.append(RetryOutcome(str(job["id"]), str(source_id), True,
                                     f"job {job['id']} re-queued (was: {job['error']})"))
        if not waits:
            to_send.append((str(job["id"]), job["kind"]))
    rows = add_outbox_rows(conn, to_send)
    assembly = enqueue_assembly_if_last(conn, source_id,
                                               messages.TASK_FOR_JOB_KIND["assemble"])
    if assembly:
        rows.append(assembly)
    return outcomes, rows


def create_image_job(conn: Conn, job_id: uuid.UUID, source_id: uuid.UUID) -> None:
    """The one job of an image source, queued now (its outbox row is the caller's)."""
    conn.execute(
        "INSERT INTO jobs (id, source_id, kind, state, enqueued_at) VALUES (%s, %s, %s, %s, now())",
        (job_id, source_id, str(JobKind.IMAGE), str(JobState.QUEUED)))


def create_failed_job(conn: Conn, job_id: uuid.UUID, source_id: uuid.UUID, kind: JobKind,
                      error: str) -> None:
    """A job born failed (a video Veil cannot plan), so the failure shows in the ledger."""
    conn.execute(
        "INSERT INTO jobs (id, source_id, kind, chunk_index, state, error, finished_at)"
        " VALUES (%s, %s, %s, 0, %s, %s, now())",
        (job_id, source_id, str(kind), str(JobState.FAILED), error))


def create_video_jobs(conn: Conn, source_id: uuid.UUID, chunks: list[dict[str, Any]],
                      frame_count: int) -> None:
    """Queued chunk jobs (``chunks``: id, index, first_frame, frame_count, plan) and the assemble
    job, which waits (no ``enqueued_at``) until its last chunk finishes."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO jobs (id, source_id, kind, chunk_index, frame_start, frame_count, chunk,"
            " state, enqueued_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now())",
            [(c["id"], source_id, str(JobKind.CHUNK), c["index"], c["first_frame"],
              c["frame_count"], Jsonb(c["plan"]), str(JobState.QUEUED)) for c in chunks])
    conn.execute(
        "INSERT INTO jobs (id, source_id, kind, chunk_index, frame_start, frame_count, state)"
        " VALUES (%s, %s, %s, 0, 0, %s, %s)",
        (job_id_for(source_id, JobKind.ASSEMBLE, 0), source_id, str(JobKind.ASSEMBLE),
         frame_count, str(JobState.QUEUED)))


def cancel_source_jobs(conn: Conn, source_id: uuid.UUID, reason: str) -> list[uuid.UUID]:
    """Lock every job of a source (waiting for one that is publishing), then cancel those not
    finished; returns the cancelled ids. For erasure: nothing may run on erased data."""
    conn.execute("SELECT id FROM jobs WHERE source_id = %s FOR UPDATE", (source_id,))
    return [r["id"] for r in conn.execute(
        "UPDATE jobs SET state = %s, finished_at = now(), updated_at = now(),"
        " lease_expires_at = NULL, error = %s"
        " WHERE source_id = %s AND state IN (%s, %s) RETURNING id",
        (str(JobState.CANCELLED), reason, source_id, str(JobState.QUEUED),
         str(JobState.RUNNING)))]
