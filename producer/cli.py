"""The `veil` command.

Exit codes: 0 success; 1 some job or file failed; 2 usage error (bad option, unknown policy,
missing path); 3 a service (Redis, PostgreSQL, S3) is unavailable; 4 timed out waiting.
User errors print one line, never a stack trace.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from producer import (
    cli_consent,
    cli_jobs,
    cli_report,
    cli_review,
    cli_rights,
    cli_services,
    cli_watch,
)
from producer.cli_common import (
    EXIT_SERVICE,
    ServiceUnavailable,
    emit,
    load_settings,
    service_errors,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Veil: redact faces in camera images on your own machines, with a ledger of every step.

    \b
    Typical session:
      veil stack up                 start the local S3 server, check Redis and PostgreSQL
      veil worker &                 start a worker (or `celery -A workers.app worker`)
      veil ingest photos/ --wait    queue every image under photos/, wait for the results
      veil status                   counts, failures, deletions due
      veil export --all -o out/     download the redacted images
    """


# --- stack -----------------------------------------------------------------------------------

@main.group()
def stack() -> None:
    """The embedded default stack: SeaweedFS S3 plus the local Redis and PostgreSQL."""


def _print_services(statuses: list[Any], as_json: bool) -> None:
    emit(as_json, [s.__dict__ for s in statuses], lambda: [
        f"{'ok  ' if s.ok else 'DOWN'}  {s.name:<10} {s.detail}" for s in statuses])


@stack.command("up")
@click.option("--json", "as_json", is_flag=True, help="Print the service states as JSON.")
def stack_up_cmd(as_json: bool) -> None:
    """Start what is missing, create the database, migrate, create the buckets. Idempotent."""
    from infra.stack import StackError, stack_up
    try:
        statuses = stack_up(load_settings(), echo=lambda m: None if as_json else click.echo(m))
    except StackError as exc:
        raise ServiceUnavailable(str(exc)) from exc
    _print_services(statuses, as_json)
    if not all(s.ok for s in statuses):
        sys.exit(EXIT_SERVICE)


@stack.command("down")
def stack_down_cmd() -> None:
    """Stop the S3 server started by `veil stack up` (Redis and PostgreSQL are left running)."""
    from infra.stack import stack_down
    _print_services(stack_down(load_settings(), echo=click.echo), False)


@stack.command("status")
@click.option("--json", "as_json", is_flag=True)
def stack_status_cmd(as_json: bool) -> None:
    """Report each service without starting anything; exit 3 if one is down."""
    from infra.stack import stack_status
    statuses = stack_status(load_settings())
    _print_services(statuses, as_json)
    if not all(s.ok for s in statuses):
        sys.exit(EXIT_SERVICE)


@main.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending SQL migrations from schemas/migrations."""
    from infra.db import apply_migrations
    with service_errors():
        applied = apply_migrations(load_settings())
    click.echo(f"applied: {', '.join(applied)}" if applied else "database is up to date")


@main.group()
def policy() -> None:
    """Redaction and retention policies."""


@policy.command("list")
@click.option("--json", "as_json", is_flag=True)
def policy_list(as_json: bool) -> None:
    """List the policies declared in the policies file: retention, classes and method, and
    the purpose, legal basis and retention rationale each one is accountable for."""
    from infra.policies import load_policies
    policies = load_policies(load_settings())
    emit(as_json, {n: {**p.model_dump(mode="json"),
                       "legal_basis_text": p.legal_basis_text,
                       "needs_consent": p.needs_consent}
                   for n, p in policies.items()}, lambda: [
        line for p in policies.values() for line in (
            f"{p.name:<12} v{p.version}  raw {_span(p.raw_retention_s)}  redacted "
            f"{_span(p.redacted_retention_s)}  work {_span(p.work_retention_s)}  audio {p.audio}"
            f"  classes {','.join(p.classes)}  {p.redaction.method}"
            f"{' (weak)' if p.redaction.weak else ''}  {p.description}",
            f"{'':<14}purpose: {p.purpose}",
            f"{'':<14}legal basis: {p.legal_basis_text}"
            f"{' (ingest needs --consent REF)' if p.needs_consent else ''}"
            f" - {p.legal_basis.detail if p.legal_basis else ''}",
            f"{'':<14}retention: {p.retention_rationale}")])


def _span(seconds: int | None) -> str:
    """86400 -> 1d, 43200 -> 12h; None -> keep (until erased)."""
    if seconds is None:
        return "keep"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _register() -> None:
    """Attach the commands the cli_* modules define; they never import `main`, so no cycle."""
    for command in (
        cli_consent.consent,
        cli_jobs.ingest, cli_jobs.status, cli_jobs.export, cli_jobs.redact, cli_jobs.retry,
        cli_report.report,
        cli_review.review,
        cli_rights.purge, cli_rights.erase, cli_rights.hold, cli_rights.dsar, cli_rights.audit,
        cli_rights.metrics,
        cli_services.worker, cli_services.beat, cli_services.flower,
        cli_watch.watch,
    ):
        main.add_command(command)


_register()
