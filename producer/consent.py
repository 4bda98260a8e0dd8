"""Consent records: `veil consent add | list | withdraw`, and the check ingest makes.

A policy whose legal basis is consent (``legal_basis.art6 = "consent"``, or Art. 9 explicit
consent) processes a recording only under a live consent record named at ingest (``--consent``);
the source keeps the link. Withdrawing a consent (Art. 7(3): as easy as giving it) erases every
linked source at once through :func:`producer.erase.erase`, with the same receipts, tombstones
and audit events as `veil erase`, and refuses every later ingest naming it.

Consent rows hold as little personal data as they can: ``ref`` and ``subject`` are references
into the controller's own records (a form number, a participant code), never a name or an
address; ``wording_version`` names the text the subject was shown. The row stays after
withdrawal: it is the proof of both.

Races: ingest locks the consent row ``FOR SHARE`` in the transaction that writes the source, and
withdrawal locks it ``FOR UPDATE`` before it lists the linked sources, so a source is either
committed before the withdrawal (and erased by it) or its ingest sees the withdrawal and is
refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from infra import db, ledger, ledger_consent
from infra.db import Conn
from infra.ledger_consent import ConsentTerms
from infra.settings import Settings
from producer.erase import erase
from schemas.enums import AuditAction
from schemas.policy import Policy


class ConsentError(ValueError):
    """A consent that is unknown, withdrawn, expired or not wanted here; names the ref."""


def add_consent(settings: Settings, ref: str, actor: str,
                terms: ConsentTerms | None = None) -> dict[str, Any]:
    """Record a consent given; a ref already on record is refused (refs are never reused, so a
    withdrawn consent cannot come back under the same reference)."""
    terms = terms or ConsentTerms()
    expires_at = terms.expires_at
    ref = ref.strip()
    if not ref:
        raise ConsentError("a consent needs a reference (REF)")
    given = terms.given_at or datetime.now(UTC)
    if expires_at is not None and expires_at <= given:
        raise ConsentError(f"consent {ref}: --expires ({expires_at.isoformat()}) is not after "
                           f"the time it was given ({given.isoformat()})")
    with db.transaction(settings) as conn:
        row = ledger_consent.insert_consent(conn, ref, actor, replace(terms, given_at=given))
        if row is None:
            raise ConsentError(f"consent {ref} is already on record; give a new reference")
        ledger.audit(conn, actor, AuditAction.CONSENT_ADD,
                     detail={"ref": ref, "scope": terms.scope,
                             "wording_version": terms.wording_version,
                             "expires_at": expires_at.isoformat() if expires_at else None})
    return _public(row)


def list_consents(settings: Settings, include_withdrawn: bool = True) -> list[dict[str, Any]]:
    """Every consent with the number of sources linked to it (erased ones included)."""
    with db.connect(settings) as conn:
        rows = ledger_consent.consents_with_sources(conn, include_withdrawn)
    return [_public(r) for r in rows]


def require_consent(conn: Conn, ref: str | None, policy: Policy, *, lock: bool = False) -> None:
    """Refuse an ingest that the consent rules forbid: a consent-based policy without a live
    consent (unknown, withdrawn or expired), or a consent named under a policy that does not
    rely on one. ``lock`` holds the row (``FOR SHARE``) until the caller's transaction ends."""
    if ref is None:
        if policy.needs_consent:
            raise ConsentError(
                f"policy {policy.name!r} relies on consent ({policy.legal_basis_text}): name the "
                "subject's consent with --consent REF (record it first: veil consent add REF)")
        return
    if not policy.needs_consent:
        raise ConsentError(f"policy {policy.name!r} relies on {policy.legal_basis_text}, not "
                           f"consent; --consent {ref} does not apply to it")
    status = ledger_consent.consent_status(conn, ref, lock=lock)
    if status is None:
        raise ConsentError(f"consent {ref} is not on record (veil consent add {ref})")
    if status.withdrawn_at is not None:
        raise ConsentError(f"consent {ref} was withdrawn at "
                           f"{status.withdrawn_at:%Y-%m-%d %H:%M:%S %Z}; nothing can be "
                           "ingested under it")
    if status.expires_at is not None and status.expires_at <= status.now:
        raise ConsentError(f"consent {ref} expired at {status.expires_at:%Y-%m-%d %H:%M:%S %Z}")


def withdraw_consent(settings: Settings, ref: str, reason: str, actor: str,
                     received_at: datetime | None = None) -> dict[str, Any]:
    """Record the withdrawal, then erase every source linked to the consent.

    The withdrawal commits first, so no ingest can name the consent any more even if one of
    the erasures is refused (a legal hold) or leaves objects for the purge to retry; running
    the command again retries the sources not erased yet. ``received_at`` is when the subject
    asked (for the response time in `veil report`); default now.
    """
    if not reason.strip():
        raise ConsentError(f"consent {ref}: a withdrawal needs a --reason")
    with db.transaction(settings) as conn:
        withdrawal = ledger_consent.withdraw(conn, ref, actor, reason)
        if withdrawal is None:
            raise ConsentError(f"consent {ref} is not on record")
        linked = ledger_consent.linked_sources(conn, ref)
    receipts = erase(settings, linked, f"consent {ref} withdrawn: {reason}", actor)
    result = {
        "ref": ref, "withdrawn_at": withdrawal.withdrawn_at.isoformat(),
        "already_withdrawn": withdrawal.already_withdrawn,
        "received_at": (received_at or withdrawal.withdrawn_at).isoformat(), "reason": reason,
        "sources_erased": [r["source_id"] for r in receipts
                           if not r.get("refused") and not r.get("failed")],
        "refused": [r["refused"] for r in receipts if r.get("refused")],
        "objects_pending": [o for r in receipts for o in r.get("failed", [])],
        "receipts": receipts,
    }
    with db.transaction(settings) as conn:
        ledger.audit(conn, actor, AuditAction.CONSENT_WITHDRAW,
                     detail={k: v for k, v in result.items() if k != "receipts"})
    return result


def _public(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
