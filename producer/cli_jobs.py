"""`veil ingest | status | export | redact`."""

from __future__ import annotations

import sys
import time
import unicodedata
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from producer.cli_common import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    emit,
    load_settings,
    parse_source_ids,
    progress_bar,
    service_errors,
)
from schemas.enums import JobState

if TYPE_CHECKING:
    from infra.settings import Settings

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: object) -> str:
    """``text`` for one line of a terminal: control, format and line-separator characters
    (a newline in a file name, an escape sequence, a bidi override) written as escapes, so a
    name cannot forge lines or colours in the text output. ``--json`` carries names as they
    are."""
    return "".join(
        _ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") else ch
        for ch in str(text))


def _policy(name: str | None):  # type: ignore[no-untyped-def]
    from infra.policies import UnknownPolicyError, get_policy
    try:
        return get_policy(name, load_settings())
    except UnknownPolicyError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from exc


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from schemas.policy import parse_duration
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--policy", "policy_name", help="Policy to apply (see `veil policy list`).")
@click.option("--raw-ttl", callback=_duration, help="Override raw retention: 30d, 12h, 10s.")
@click.option("--camera", help="Camera or source group, for access requests.")
@click.option("--captured-at", type=click.DateTime(), help="Capture time when metadata lacks it.")
@click.option("--consent", "consent_ref", metavar="REF", help="The subject's consent record "
              "(veil consent add); required by a policy whose legal basis is consent.")
@click.option("--wait", is_flag=True, help="Return when every job finished; exit 0 only if all "
              "succeeded.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
def ingest(targets: tuple[str, ...], policy_name: str | None, raw_ttl: int | None,
           camera: str | None, captured_at: datetime | None, consent_ref: str | None, wait: bool,
           timeout: float, as_json: bool) -> None:
    """Queue images for redaction: files, folders (recursive) or s3://bucket/prefix.

    Each original goes into the restricted `raw` bucket under its sha256; the same bytes twice
    make one source (reported as a duplicate). A file whose name starts with `-` is given after
    `--` (veil ingest -- -x.jpg) or as ./-x.jpg. Under a folder, a symbolic link that leads out
    of it is refused, not read.
    """
    from infra.broker import make_celery
    from producer.ingest import IngestError, IngestOptions, collect_inputs, ingest, wait_for
    settings = load_settings()
    options = IngestOptions(policy=_policy(policy_name), raw_ttl_s=raw_ttl, camera=camera,
                            captured_at=captured_at, consent_ref=consent_ref)
    started = time.monotonic()
    with service_errors():
        try:
            items = collect_inputs(targets, settings)
        except IngestError as exc:
            raise click.BadParameter(str(exc), param_hint="TARGETS") from exc
        app = make_celery(settings, name="veil-producer")
        with progress_bar(len(items), "ingest", not as_json) as tick:
            try:
                results = ingest(items, options, settings, app, progress=tick)
            except IngestError as exc:  # refused before anything was stored (consent)
                raise click.BadParameter(str(exc), param_hint="--consent") from exc
        queued = [r.source_id for r in results if r.source_id and not r.duplicate]
        states: dict[uuid.UUID, tuple[str, str | None]] = {}
        if wait and queued:
            with progress_bar(len(queued), "redact", not as_json) as tick:
                states = wait_for(queued, settings, timeout, tick)
        outputs = _output_keys([r.source_id for r in results if r.source_id], settings)
    for r in results:
        if r.source_id in states:
            r.state, r.error = states[r.source_id]
    payload = {
        "sources": [{"source_id": str(r.source_id) if r.source_id else None, "file": r.name,
                     "state": r.state, "duplicate": r.duplicate, "error": r.error,
                     "output_key": outputs.get(r.source_id) if r.source_id else None}
                    for r in results],
        "seconds": round(time.monotonic() - started, 3),
    }
    failed = [r for r in results if r.state in (JobState.FAILED, "rejected", JobState.CANCELLED)]
    pending = [r for r in results if r.state in (JobState.QUEUED, JobState.RUNNING)]

    def text() -> list[str]:
        lines = [f"{str(r.source_id or '-'):<36}  {r.state:<9} {printable(r.name)}"
                 f"{' (duplicate)' if r.duplicate else ''}"
                 f"{': ' + printable(r.error) if r.error else ''}"
                 for r in results]
        return [*lines, f"{len(results)} files, {len(queued)} queued, "
                f"{sum(r.duplicate for r in results)} duplicates, {len(failed)} failed"]
    emit(as_json, payload, text)
    if failed:
        sys.exit(EXIT_FAILED)
    if wait and pending:
        sys.exit(EXIT_TIMEOUT)


def _output_keys(source_ids: list[uuid.UUID | None], settings) -> dict[uuid.UUID, str]:  # type: ignore[no-untyped-def]
    from infra import db, ledger_artifacts
    with db.connect(settings) as conn:
        return ledger_artifacts.output_keys(conn, [s for s in source_ids if s])


@click.command()
@click.argument("source_id", required=False)
@click.option("--json", "as_json", is_flag=True)
def status(source_id: str | None, as_json: bool) -> None:
    """Counts per state, failures and deletions due; or one source's lineage (--json: the
    whole record)."""
    from producer.status import overview
    settings = load_settings()
    if source_id is not None:
        _source_status(source_id, as_json, settings)
        return
    with service_errors():
        data = overview(settings)
    if as_json:
        emit(True, data, list)
        return
    jobs, dels = data["jobs"], data["deletions"]
    click.echo(f"sources {data['sources']}  " + "  ".join(f"{k} {v}" for k, v in jobs.items()))
    click.echo(f"deletions due {dels['due']}  overdue {dels['overdue']}  deferred "
               f"{dels['deferred']}" + (f"  OLDEST OVERDUE {dels['oldest_overdue']}"
                                        if dels["overdue"] else ""))
    if (w := data["watch"])["updated_at"]:
        click.echo(f"inbox backlog {w['backlog']}{'  PAUSED (queue full)' if w['paused'] else ''}"
                   f"  rejected kept {w['rejected_kept']}  watcher seen {w['updated_at']}")
    from producer.status import overdue_warning, stalled_lines, stalled_warning, unrecorded_line
    if warning := overdue_warning(data):  # a missed retention deadline must be loud
        click.secho(warning, fg="red", bold=True, err=True)
    if warning := stalled_warning(data, settings):
        click.secho(warning, fg="red", bold=True, err=True)
    for line in stalled_lines(data):
        click.echo(line)
    if unrecorded := unrecorded_line(data):
        click.echo(unrecorded)
    for f in data["failures"]:
        click.echo(f"failed  source {f['source_id']}  job {f['job_id']}: {f['error']}")
    for v in data.get("videos", []):
        click.echo(f"video   source {v['source_id']}  chunks {v['chunks_done']}/{v['chunks']}"
                   f"  frames {v['frames_done']}/{v['frames']}"
                   + ("  assembling" if v["assembling"] else ""))


def _source_status(source_id: str, as_json: bool, settings: Settings) -> None:
    from producer.status import lineage, lineage_lines
    with service_errors():
        data = lineage(parse_source_ids((source_id,))[0], settings)
    if data is None:
        raise click.ClickException(f"no source {source_id}")
    if as_json:
        emit(True, data, list)
        return
    for line in lineage_lines(data):
        click.echo(printable(line))  # a file name or an error may hold control characters


@click.command()
@click.argument("source_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Export every source with an output.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--names", type=click.Choice(["source-id", "original"]), default="source-id",
              show_default=True, help="Name files by source id, or after the original file "
              "(personal data: the choice is audited).")
@click.option("--json", "as_json", is_flag=True)
def export(source_ids: tuple[str, ...], all_: bool, output: Path, names: str,
           as_json: bool) -> None:
    """Download redacted outputs, named by source id (or --names original).

    Outputs of erased sources and outputs already purged are skipped and counted."""
    from producer.export import export as run_export
    if bool(source_ids) == all_:
        raise click.UsageError("give SOURCE_ID... or --all (not both)")
    settings = load_settings()
    ids = None if all_ else parse_source_ids(source_ids)
    with service_errors(), progress_bar(len(ids or []), "export", not as_json) as tick:
        results = run_export(ids, output, settings, progress=tick,
                             names="original" if names == "original" else "source-id")
    errors = [r for r in results if r.error]
    skipped = [r for r in results if r.skipped]
    emit(as_json, [{"source_id": str(r.source_id), "path": str(r.path) if r.path else None,
                    "error": r.error, **({"skipped": r.skipped} if r.skipped else {})}
                   for r in results], lambda: [
        *(f"{r.source_id}  {r.path or 'ERROR: ' + str(r.error)}" for r in results
          if not r.skipped),
        *([f"{len(skipped)} skipped (erased or purged)"] if skipped else [])])
    if errors:
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--policy", "policy_name", help="Policy whose redaction settings apply.")
@click.option("-j", "--processes", type=int, help="Worker processes (default: CPU count).")
@click.option("--json", "as_json", is_flag=True)
def redact(paths: tuple[Path, ...], output: Path, policy_name: str | None,
           processes: int | None, as_json: bool) -> None:
    """Redact files in this process, without the stack (no ledger: for one-off use).

    A file whose name starts with `-` is given after `--` (veil redact -o out -- -x.jpg) or
    as ./-x.jpg. Under a folder, a symbolic link that leads out of it is refused, not read.
    """
    from producer.redact_local import redact_files, scan_inputs
    from workers.imageio import SUPPORTED
    policy = _policy(policy_name)
    started = time.monotonic()
    scan = scan_inputs(list(paths), exclude=output)  # walked once, for the count and the run
    skipped = scan.skipped
    with progress_bar(len(scan.inputs), "redact", not as_json) as tick:
        results = redact_files(list(paths), output, policy, processes=processes, progress=tick,
                               scan=scan)
    seconds = time.monotonic() - started
    errors = [r for r in results if r.error]
    emit(as_json, {"files": [{"input": str(r.path), "output": str(r.output) if r.output else None,
                              "faces": r.faces, "guard": r.guard, "error": r.error}
                             for r in results],
                   "skipped": [str(p) for p in skipped],
                   "seconds": round(seconds, 3)}, lambda: [
        *(f"{printable(r.path)} -> {printable(r.output or 'ERROR: ' + str(r.error))}"
          f"{' (the guard re-redacted it)' if r.guard == 'reredacted' else ''}"
          for r in results),
        *(f"{printable(p)} skipped: not an image or video Veil reads ({SUPPORTED}; "
          "MP4, MOV, MKV, AVI, MPEG-TS)" for p in skipped),
        f"{len(results)} files, {sum(r.faces for r in results)} faces, "
        f"{len(errors)} failed, {len(skipped)} skipped, {seconds:.1f} s"])
    if errors:
        sys.exit(EXIT_FAILED)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object for scripts.")
def retry(job_ids: tuple[str, ...], all_failed: bool, as_json: bool) -> None:
    """Re-queue failed jobs: JOB_ID... (see `veil status`) or --failed for all of them.

    Each retry is audited with your login and the attempts the job had. A video is retried as a
    whole: every failed job of its source. Refused, with the reason: jobs that are not failed,
    jobs of erased sources, jobs whose original was already deleted. Exit 0 when every job
    asked for was re-queued, 1 when one was refused, 2 for a bad id.
    """
    from infra.broker import make_celery
    from producer.audit_log import operator_identity
    from producer.retry import retry_jobs
    if bool(job_ids) == all_failed:
        raise click.UsageError("give JOB_ID... or --failed (not both)")
    ids = None if all_failed else _job_ids(job_ids)
    settings = load_settings()
    with service_errors():
        outcomes = retry_jobs(settings, make_celery(settings, name="veil-producer"), ids,
                              operator_identity())
    retried = [o for o in outcomes if o.retried]
    refused = [o for o in outcomes if not o.retried]
    emit(as_json, {"retried": [o.__dict__ for o in retried],
                   "refused": [o.__dict__ for o in refused]}, lambda: [
        *(f"retried  {o.message}" for o in retried),
        *(f"REFUSED  {o.message}" for o in refused),
        f"{len(retried)} re-queued, {len(refused)} refused"])
    if refused:
        sys.exit(EXIT_FAILED)


def _job_ids(values: tuple[str, ...]) -> list[uuid.UUID]:
    ids = []
    for value in values:
        try:
            ids.append(uuid.UUID(value))
        except ValueError as exc:
            raise click.BadParameter(f"not a job id: {value!r}", param_hint="JOB_IDS") from exc
    return ids
