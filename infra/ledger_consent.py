"""Consent records: the ``consents`` table, and the sources linked to a consent.

Owner of ``consents``. `veil consent add | list | withdraw` run as ``veil_operator``, the one
role that may insert and update consents; the ingest (``veil_producer``) reads a consent and
locks it ``FOR SHARE`` (:func:`consent_status` with ``lock``) in the transaction that links a
source to it. Withdrawal locks the row ``FOR UPDATE`` (:func:`withdraw`) before it lists the
linked sources, so an ingest either committed first (and its source is erased) or sees the
withdrawal.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict, cast

from infra.db import Conn

_COLUMNS = ("ref", "subject", "scope", "wording_version", "given_at", "recorded_by",
            "expires_at", "withdrawn_at", "withdrawn_by", "withdrawal_reason")


class ConsentRecord(TypedDict):
    """A consent as recorded; the withdrawal fields stay None until it is withdrawn."""

    ref: str
    subject: str | None
    scope: str | None
    wording_version: str | None
    given_at: datetime
    recorded_by: str
    expires_at: datetime | None
    withdrawn_at: datetime | None
    withdrawn_by: str | None
    withdrawal_reason: str | None


class ConsentWithSources(ConsentRecord):
    """A consent and how many sources are linked to it (erased ones counted apart)."""

    sources: int
    sources_erased: int


@dataclass(frozen=True)
class ConsentTerms:
    """What a consent covers and for how long, as the person gave it; all optional (``given_at``
    defaults to now)."""

    subject: str | None = None
    scope: str | None = None
    expires_at: datetime | None = None
    wording_version: str | None = None
    given_at: datetime | None = None


def insert_consent(conn: Conn, ref: str, actor: str, terms: ConsentTerms) -> ConsentRecord | None:
    """Record a consent given (``terms.given_at`` None: now), with ``actor`` as who recorded
    it; None when its ref is already on record (refs are never reused)."""
    row = conn.execute(
        "INSERT INTO consents (ref, subject, scope, wording_version, given_at, recorded_by,"
        " expires_at) VALUES (%s, %s, %s, %s, coalesce(%s, now()), %s, %s)"
        f" ON CONFLICT (ref) DO NOTHING RETURNING {', '.join(_COLUMNS)}",
        (ref, terms.subject, terms.scope, terms.wording_version, terms.given_at, actor,
         terms.expires_at)).fetchone()
    return cast(ConsentRecord | None, row)


def consents_with_sources(conn: Conn, include_withdrawn: bool = True) -> list[ConsentWithSources]:
    """Every consent (or those not withdrawn) in the order given, with its linked sources."""
    rows = conn.execute(
        f"SELECT {', '.join('c.' + c for c in _COLUMNS)},"
        " count(s.id) AS sources, count(s.erased_at) AS sources_erased"
        " FROM consents c LEFT JOIN sources s ON s.consent_ref = c.ref"
        + ("" if include_withdrawn else " WHERE c.withdrawn_at IS NULL")
        + " GROUP BY c.ref ORDER BY c.given_at, c.ref").fetchall()
    return cast(list[ConsentWithSources], rows)


@dataclass(frozen=True)
class ConsentStatus:
    """Whether a consent still holds: when it was withdrawn and when it expires (None: not),
    and the database's time, to compare the expiry with."""

    withdrawn_at: datetime | None
    expires_at: datetime | None
    now: datetime


def consent_status(conn: Conn, ref: str, *, lock: bool = False) -> ConsentStatus | None:
    """The consent's state (None: not on record); ``lock`` holds the row ``FOR SHARE`` until the
    caller's transaction ends, so a withdrawal waits for the ingest that names it."""
    row = conn.execute(
        "SELECT withdrawn_at, expires_at, now() AS now FROM consents WHERE ref = %s"
        + (" FOR SHARE" if lock else ""), (ref,)).fetchone()
    return ConsentStatus(**row) if row else None


@dataclass(frozen=True)
class Withdrawal:
    """A consent's withdrawal: when (the first one's time when it was withdrawn before) and
    whether it was already withdrawn."""

    withdrawn_at: datetime
    already_withdrawn: bool


def withdraw(conn: Conn, ref: str, actor: str, reason: str) -> Withdrawal | None:
    """Lock the consent ``FOR UPDATE`` and record its withdrawal, keeping an earlier one's
    time, actor and reason; None: no such consent."""
    row = conn.execute("SELECT withdrawn_at FROM consents WHERE ref = %s FOR UPDATE",
                       (ref,)).fetchone()
    if row is None:
        return None
    withdrawn_at = conn.execute(
        "UPDATE consents SET withdrawn_at = coalesce(withdrawn_at, now()),"
        " withdrawn_by = coalesce(withdrawn_by, %s),"
        " withdrawal_reason = coalesce(withdrawal_reason, %s) WHERE ref = %s"
        " RETURNING withdrawn_at", (actor, reason, ref)).fetchone()["withdrawn_at"]  # type: ignore[index]
    return Withdrawal(withdrawn_at, row["withdrawn_at"] is not None)


def linked_sources(conn: Conn, ref: str) -> list[uuid.UUID]:
    """The sources ingested under the consent and not erased yet."""
    return [r["id"] for r in conn.execute(
        "SELECT id FROM sources WHERE consent_ref = %s AND erased_at IS NULL ORDER BY id",
        (ref,))]
