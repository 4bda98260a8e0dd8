"""`veil purge | erase | hold | dsar | audit | metrics`: retention and data-subject rights.

Exit codes follow `veil`'s: 0 done; 1 something was refused or failed (named in the output);
2 bad usage; 3 a service is unavailable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import click

from producer.cli_common import (
    EXIT_FAILED,
    emit,
    load_settings,
    parse_source_ids,
    service_errors,
    time_option,
)


@contextmanager
def _rights_errors() -> Iterator[None]:
    """A refused request (unknown or erased source, hold conflict): one line, exit 1."""
    from producer.holds import RightsError
    try:
        yield
    except RightsError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_FAILED)


# --- purge -------------------------------------------------------------------------------------

@click.command()
@click.option("--now", "run_here", is_flag=True,
              help="Run the purge in this process and wait (default: hand it to the workers).")
@click.option("--dry-run", is_flag=True, help="List what is due (and held); delete nothing.")
@click.option("--json", "as_json", is_flag=True)
def purge(run_here: bool, dry_run: bool, as_json: bool) -> None:
    """Delete every object whose retention ran out, all versions, with a receipt each.

    `veil beat` schedules this every `retention.purge_interval_s` (60 s); run it by hand to
    catch up. Objects of sources under legal hold are deferred, not deleted.
    """
    settings = load_settings()
    with service_errors():
        if dry_run:
            from workers.retention.purge import due_deletions
            due = due_deletions(settings)
            rows = [{"task_id": t.id, "source_id": str(t.source_id) if t.source_id else None,
                     "bucket": t.bucket, "key": t.key, "due_at": t.due_at.isoformat(),
                     "hold_id": t.hold_id, "raw": t.is_raw, "reason": t.reason,
                     "unrecorded": t.source_id is None} for t in due]
            emit(as_json, rows, lambda: [
                *(f"{r['due_at']}  {r['bucket']}/{r['key']}"
                  + (f"  HELD (legal hold {r['hold_id']}): would be deferred"
                     if r["hold_id"] else "")
                  + (f"  ({r['reason']})" if r["unrecorded"] else "") for r in rows),
                f"{len(rows)} due (first 1000 shown); nothing deleted (dry run)"])
            return
        if not run_here:
            from infra.broker import make_celery
            from schemas import messages
            make_celery(settings, name="veil-producer").send_task(messages.PURGE)
            click.echo("purge sent to the retention worker (retention queue); "
                       "use --now to run it here")
            return
        from workers.retention.purge import purge_due
        report = purge_due(settings, max_runtime_s=float("inf"))
    emit(as_json, report.as_dict(), lambda: [
        f"{report.deleted} deleted, {report.deferred} deferred by legal hold, "
        f"{report.failed} failed (retried later) in {report.seconds:.1f} s",
        *(f"failed: {e}" for e in report.errors)])
    if report.failed:
        sys.exit(EXIT_FAILED)


# --- erase -------------------------------------------------------------------------------------

@click.command()
@click.argument("source_ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why (request reference, consent withdrawn...). "
              "Recorded in the audit trail.")
@click.option("--received", "received_at", callback=time_option,
              help="When the request came in (ISO 8601; default now), for response times.")
@click.option("--now", "run_here", is_flag=True, help="Carry the erasure out in this process "
              "(needs the retention credentials) instead of the retention worker.")
@click.option("--timeout", "timeout_s", default=120.0, show_default=True,
              help="Seconds to wait for the retention worker's receipt.")
def erase(source_ids: tuple[str, ...], reason: str, received_at: datetime | None,
          run_here: bool, timeout_s: float) -> None:
    """Erase sources now: the right to erasure, or consent withdrawn.

    Records an erasure request, which the retention worker carries out: it cancels the jobs,
    destroys each raw original's key, deletes every version of the original, of its inbox
    upload and of everything derived from it, and writes a JSON receipt, printed here. The
    ledger keeps a tombstone (id and checksum only) so the same file is refused if it comes
    back. Sources under legal hold are refused, naming the hold.
    """
    from producer.audit_log import operator_identity
    from producer.erase import EraseRun, ErasurePending
    from producer.erase import erase as run_erase
    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    settings = load_settings()
    with service_errors():
        try:
            receipts = run_erase(settings, parse_source_ids(source_ids), reason,
                                 operator_identity(), received_at,
                                 EraseRun(now=run_here, timeout_s=timeout_s))
        except ErasurePending as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_FAILED)
    click.echo(json.dumps(receipts, indent=2, default=str))
    problems = [r for r in receipts if r.get("refused") or r.get("failed")]
    for r in problems:
        click.echo(f"Error: {r.get('refused') or 'source ' + r['source_id'] + ': '}"
                   + ("" if r.get("refused") else
                      f"{len(r['failed'])} objects not deleted yet; the purge retries them"),
                   err=True)
    if problems:
        sys.exit(EXIT_FAILED)


# --- hold --------------------------------------------------------------------------------------

@click.group()
def hold() -> None:
    """Legal holds: freeze a source's objects (purges defer them, erasure is refused)."""


@hold.command("set")
@click.argument("source_id")
@click.option("--reason", required=True, help="Case or order reference.")
@click.option("--forbid-reveal", is_flag=True, help="Also refuse `veil dsar --reveal` on it.")
@click.option("--json", "as_json", is_flag=True)
def hold_set(source_id: str, reason: str, forbid_reveal: bool, as_json: bool) -> None:
    """Put SOURCE_ID under legal hold (also an S3 legal hold where the bucket has object lock)."""
    from producer.audit_log import operator_identity
    from producer.holds import set_hold
    settings = load_settings()
    with service_errors(), _rights_errors():
        result = set_hold(settings, parse_source_ids((source_id,))[0], reason, operator_identity(),
                          forbid_reveal=forbid_reveal)
    emit(as_json, result, lambda: [
        f"legal hold {result['hold_id']} set on source {source_id}: {result['objects_held']} "
        f"objects held, {result['s3_versions_locked']} S3 versions locked",
        *(f"already deleted before the hold: {o}" for o in result["already_deleted"])])


@hold.command("release")
@click.argument("source_id")
@click.option("--reason", required=True, help="Why the hold ends.")
@click.option("--json", "as_json", is_flag=True)
def hold_release(source_id: str, reason: str, as_json: bool) -> None:
    """Release SOURCE_ID's hold; deletions it deferred are due again at the next purge."""
    from producer.audit_log import operator_identity
    from producer.holds import release_hold
    settings = load_settings()
    with service_errors(), _rights_errors():
        result = release_hold(settings, parse_source_ids((source_id,))[0], reason,
                              operator_identity())
    emit(as_json, result, lambda: [
        f"legal hold {result['hold_id']} released on source {source_id}; "
        f"{result['deletions_resumed']} deferred deletions due again"])


@hold.command("list")
@click.option("--all", "all_", is_flag=True, help="Include released holds.")
@click.option("--json", "as_json", is_flag=True)
def hold_list(all_: bool, as_json: bool) -> None:
    """List active (or all) legal holds."""
    from producer.holds import list_holds
    with service_errors():
        holds = list_holds(load_settings(), include_released=all_)
    emit(as_json, holds, lambda: [
        f"{h['id']:>5}  {h['source_id']}  set {h['set_at']:%Y-%m-%d %H:%M} by {h['set_by']}"
        + (f"  released {h['released_at']:%Y-%m-%d %H:%M}" if h["released_at"] else "")
        + f"  {h['reason']}" for h in holds] or ["no legal holds"])


# --- dsar --------------------------------------------------------------------------------------

@click.command()
@click.option("--camera", required=True, help="Camera or source group given at ingest.")
@click.option("--from", "start", required=True, callback=time_option,
              help="ISO 8601; naive is UTC.")
@click.option("--to", "end", required=True, callback=time_option, help="ISO 8601; naive is UTC.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The zip to write (with --preview: the contact sheet, a PNG).")
@click.option("--clip", is_flag=True, help="Cut videos to the requested range.")
@click.option("--preview", is_flag=True, help="Write a contact sheet of the recorded regions "
              "with their ids (drawn on the redacted frames: no face shows) instead of a zip.")
@click.option("--reveal", "reveal", multiple=True, type=int, metavar="REGION_ID",
              help="Show this region (the requester) unredacted, from the raw original while it "
              "is held; everyone else stays redacted. Repeatable. Audited.")
@click.option("--received", "received_at", callback=time_option,
              help="When the request came in (ISO 8601; default now), for response times.")
@click.option("--json", "as_json", is_flag=True)
def dsar(camera: str, start: datetime, end: datetime, output: Path, clip: bool, preview: bool,
         reveal: tuple[int, ...], received_at: datetime | None, as_json: bool) -> None:
    """Answer a subject access request: the recordings of CAMERA in a time range.

    \b
    1. veil dsar --camera C --from T1 --to T2 --preview -o sheet.png   (pick the requester)
    2. veil dsar --camera C --from T1 --to T2 --clip --reveal 17 -o answer.zip

    Writes a zip with the media (JPEG, PNG, MP4: redacted, or with the --reveal regions
    unredacted) and a manifest (JSON and CSV) with lineage, purpose, legal basis, processing
    and retention dates of each recording. Every source exported or revealed is audited.
    A reveal is refused (exit 1) once the original is purged or under a hold forbidding it.
    """
    from producer.audit_log import operator_identity
    from producer.dsar import DsarOptions, DsarRequest, export_dsar, preview_dsar
    settings = load_settings()
    if preview and reveal:
        raise click.BadParameter("--preview lists the regions; --reveal uses them: one at a time",
                                 param_hint="--preview")
    with service_errors(), _rights_errors():
        try:
            if preview:
                regions = preview_dsar(settings, camera, start, end, output, operator_identity())
                emit(as_json, {"path": str(output), "regions": regions}, lambda: [
                    *(f"#{r['region_id']:<6} {r['class']:<5} source {r['source_id']} frames "
                      f"{r['frames'][0]}-{r['frames'][1]}  {r['captured_at']}" for r in regions),
                    f"{output}: contact sheet of {len(regions)} regions"])
                return
            result = export_dsar(settings, DsarRequest(camera, start, end), output,
                                 operator_identity(),
                                 DsarOptions(clip=clip, reveal=frozenset(reveal),
                                             received_at=received_at))
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    emit(as_json, {"path": str(result.path), "sources": result.sources, "files": result.files,
                   "revealed": result.revealed},
         lambda: [f"{result.path}: {len(result.sources)} recordings on record, "
                  f"{result.files} media files"
                  + (f", regions revealed in {len(result.revealed)}" if result.revealed else "")])


# --- audit -------------------------------------------------------------------------------------

@click.command()
@click.option("--source", "source_id", help="Only this source's events.")
@click.option("--since", callback=time_option, help="ISO 8601 time; naive is UTC.")
@click.option("--until", callback=time_option, help="ISO 8601 time; naive is UTC.")
@click.option("--action", "actions", multiple=True, help="Only these actions (repeatable): "
              "ingest, raw_read, output_write, export, dsar_export, erase, purge, "
              "purge_deferred, purge_failed, hold_set, hold_release, job_failed.")
@click.option("--limit", default=1000, show_default=True, help="The newest N events.")
@click.option("--json", "as_json", is_flag=True)
def audit(source_id: str | None, since: datetime | None, until: datetime | None,
          actions: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Who did what, when: ingests, raw reads, exports, erasures, purges, holds.

    The trail is append-only: the database refuses UPDATE and DELETE on it.
    """
    from producer.audit_log import query_audit, summarize
    sid = parse_source_ids((source_id,))[0] if source_id else None
    with service_errors():
        events = query_audit(load_settings(), source_id=sid, since=since, until=until,
                             actions=actions, limit=limit)
    emit(as_json, events, lambda: [summarize(e) for e in events] or ["no audit events"])


# --- metrics -----------------------------------------------------------------------------------

@click.command()
@click.option("--serve", "port", type=int, help="Serve /metrics on this port instead.")
@click.option("--address", default="127.0.0.1", show_default=True)
def metrics(port: int | None, address: str) -> None:
    """Prometheus metrics from the ledger (overdue deletions, holds, jobs by state)."""
    from producer.metrics import collect, make_server, render
    settings = load_settings()
    if port is None:
        with service_errors():
            click.echo(render(collect(settings)), nl=False)
        return
    server = make_server(settings, port, address)
    click.echo(f"serving http://{address}:{server.server_port}/metrics", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
