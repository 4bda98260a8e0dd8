"""`veil consent add | list | withdraw`: consent records for policies whose legal basis is
consent (see docs/accountability.md).

Exit codes follow `veil`'s: 0 done; 1 a linked source could not be erased (a legal hold, or
objects the purge retries); 2 bad usage (an unknown, duplicate or withdrawn consent).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click

from producer.cli_common import (
    EXIT_FAILED,
    EXIT_USAGE,
    emit,
    load_settings,
    service_errors,
    time_option,
)


@contextmanager
def _consent_errors() -> Iterator[None]:
    from producer.consent import ConsentError
    try:
        yield
    except ConsentError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)


@click.group()
def consent() -> None:
    """Consent records: the ground of policies on Art. 6(1)(a) consent (e.g. `research`).

    \b
    veil consent add P-0042 --scope "study 7" --wording-version v3 --expires 2027-06-30
    veil ingest clips/ --policy research --consent P-0042
    veil consent withdraw P-0042 --reason "e-mail of 2026-05-02"   # erases P-0042's sources
    """


@consent.command("add")
@click.argument("ref")
@click.option("--subject", help="A reference to the subject in your own records (participant "
              "code); never a name or an address.")
@click.option("--scope", help="What the subject agreed to (study, purpose).")
@click.option("--expires", "expires_at", callback=time_option, help="ISO 8601; naive is UTC.")
@click.option("--wording-version", help="Version of the consent text shown to the subject.")
@click.option("--given-at", callback=time_option, help="When it was given (default: now).")
@click.option("--json", "as_json", is_flag=True)
def consent_add(ref: str, subject: str | None, scope: str | None, expires_at: datetime | None,
                wording_version: str | None, given_at: datetime | None, as_json: bool) -> None:
    """Record the consent REF; sources ingested with `--consent REF` are linked to it."""
    from producer.audit_log import operator_identity
    from producer.consent import ConsentTerms, add_consent
    terms = ConsentTerms(subject=subject, scope=scope, expires_at=expires_at,
                         wording_version=wording_version, given_at=given_at)
    with service_errors(), _consent_errors():
        row = add_consent(load_settings(), ref, operator_identity(), terms)
    emit(as_json, row, lambda: [
        f"consent {row['ref']} recorded: given {row['given_at']}"
        + (f", expires {row['expires_at']}" if row["expires_at"] else "")
        + (f", wording {row['wording_version']}" if row["wording_version"] else "")])


@consent.command("list")
@click.option("--active", is_flag=True, help="Only consents not withdrawn.")
@click.option("--json", "as_json", is_flag=True)
def consent_list(active: bool, as_json: bool) -> None:
    """Every consent on record, with its sources (erased ones counted apart)."""
    from producer.consent import list_consents
    with service_errors():
        rows = list_consents(load_settings(), include_withdrawn=not active)
    emit(as_json, rows, lambda: [
        f"{r['ref']:<16} given {r['given_at'][:19]}  "
        + (f"WITHDRAWN {r['withdrawn_at'][:19]} ({r['withdrawal_reason']})"
           if r["withdrawn_at"] else
           f"expires {r['expires_at'][:19] if r['expires_at'] else 'never'}")
        + f"  wording {r['wording_version'] or '-'}  scope {r['scope'] or '-'}"
        f"  sources {r['sources']} ({r['sources_erased']} erased)" for r in rows]
        or ["no consents on record"])


@consent.command("withdraw")
@click.argument("ref")
@click.option("--reason", required=True, help="How the subject withdrew (request reference).")
@click.option("--received", "received_at", callback=time_option,
              help="When the subject asked (ISO 8601; default now), for response times.")
@click.option("--json", "as_json", is_flag=True)
def consent_withdraw(ref: str, reason: str, received_at: datetime | None, as_json: bool) -> None:
    """Withdraw REF: erase every source linked to it now, exactly as `veil erase` does, and
    refuse later ingests naming it. Prints the erasure receipts with --json."""
    from producer.audit_log import operator_identity
    from producer.consent import withdraw_consent
    with service_errors(), _consent_errors():
        result = withdraw_consent(load_settings(), ref, reason, operator_identity(), received_at)
    emit(as_json, result, lambda: [
        f"consent {ref} withdrawn at {result['withdrawn_at']}: "
        f"{len(result['sources_erased'])} sources erased",
        *(f"Error: {r}" for r in result["refused"]),
        *(f"Error: {o['bucket']}/{o['key']} not deleted yet; the purge retries it"
          for o in result["objects_pending"])])
    if result["refused"] or result["objects_pending"]:
        sys.exit(EXIT_FAILED)
