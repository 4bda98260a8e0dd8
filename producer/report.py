"""`veil report --from T --to T -o report.html`: the record of processing activities (GDPR
Art. 30) and the technical annex of a DPIA (Art. 35), from configuration and the ledger.

Nothing in it is typed by hand: the policies come from the policies file, the quality figures
from the latest `bench/quality.py --record` (``producer/assets/quality.json``, shipped with the
package), and everything else from the ledger for the period: sources ingested, guard outcomes,
deletions due (on time, late, overdue), erasures, consent withdrawals and access requests with their
response times, legal holds, and raw-access events by actor. ``producer.report_render`` draws
the plots and fills the template.

A deletion counts as on time when it was done within the purge interval plus one minute of its
due time (the purge runs every ``retention.purge_interval_s``); deferred by a legal hold is
reported apart, never as late.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from infra import db, ledger, ledger_reports
from infra.db import Conn
from infra.policies import load_policies
from infra.settings import Settings
from schemas.enums import AuditAction, DeletionState


def load_quality() -> dict[str, Any] | None:
    """The latest quality figures shipped with the package (None when absent)."""
    try:
        text = resources.files("producer").joinpath("assets", "quality.json").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return None
    data: dict[str, Any] = json.loads(text)
    return data


def build_report(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Everything the report shows, as plain data (also what `--json` prints)."""
    grace = timedelta(seconds=settings.retention.purge_interval_s + 60)
    period = ledger_reports.Period(start, end)
    with db.connect(settings) as conn:
        data = {
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "generated_at": datetime.now(UTC).isoformat(),
            "policies": _policies(settings),
            "policies_in_ledger": ledger_reports.policies_used(conn, period),
            "recordings": ledger_reports.recordings(conn, period),
            "quality": load_quality(),
            "guard": ledger_reports.guard_outcomes(conn, period),
            "guard_failures": ledger_reports.guard_failures(conn, period),
            "deletions": _deletions(conn, period, grace),
            "erasures": _responses(conn, AuditAction.ERASE, period),
            "withdrawals": _responses(conn, AuditAction.CONSENT_WITHDRAW, period),
            "access_requests": _with_times(ledger_reports.access_requests(conn, period)),
            "consents": ledger_reports.consent_counts(conn, period),
            "holds": ledger_reports.holds_in_force(conn, period),
            "raw_access": ledger_reports.raw_access(conn, period),
            "reveals": ledger_reports.reveals(conn, period),
        }
    return data


def _policies(settings: Settings) -> list[dict[str, Any]]:
    return [{"name": p.name, "version": p.version, "description": p.description,
             "purpose": p.purpose, "legal_basis": p.legal_basis_text,
             "legal_basis_detail": p.legal_basis.detail if p.legal_basis else "",
             "needs_consent": p.needs_consent, "classes": p.classes,
             "method": p.redaction.method + (" (weak)" if p.redaction.weak else ""),
             "mask": p.redaction.mask, "box_scale": p.redaction.box_scale,
             "raw_retention_s": p.raw_retention_s, "redacted_retention_s": p.redacted_retention_s,
             "work_retention_s": p.work_retention_s, "audio": p.audio,
             "retention_rationale": p.retention_rationale,
             "guard": f"threshold {p.guard.threshold}, {p.guard.on_failure}"
             if p.guard.enabled else "off"}
            for p in load_policies(settings).values()]


def _deletions(conn: Conn, period: ledger_reports.Period, grace: timedelta) -> dict[str, Any]:
    """Deletions due in the period, and earlier ones still not done (an overdue deletion is
    never left out because its due time is older than the period): done on time, done late,
    overdue (not done yet), deferred by a legal hold; the worst delay; delays for the plot."""
    rows = ledger_reports.deletions_due(conn, period, ledger.KEEP_UNTIL_ERASED)
    out: dict[str, Any] = {"due": len(rows), "on_time": 0, "late": 0, "overdue": 0,
                           "deferred": 0, "worst_delay_s": 0.0, "delays_min": [],
                           "by_bucket": {}}
    for r in rows:
        seconds = max(0.0, r["delay"].total_seconds())
        bucket = out["by_bucket"].setdefault(r["bucket"], {"on_time": 0, "late": 0,
                                                           "overdue": 0, "deferred": 0})
        if r["state"] == DeletionState.DEFERRED:
            kind = "deferred"
        elif r["state"] == DeletionState.DONE:
            kind = "on_time" if seconds <= grace.total_seconds() else "late"
            out["delays_min"].append(round(seconds / 60, 2))
        else:
            kind = "on_time" if seconds <= grace.total_seconds() else "overdue"
        out[kind] += 1
        bucket[kind] += 1
        if kind != "deferred":
            out["worst_delay_s"] = max(out["worst_delay_s"], seconds)
    return out


def _responses(conn: Conn, action: AuditAction, period: ledger_reports.Period) -> dict[str, Any]:
    """Requests answered by ``action`` events, with their response times (event time minus
    the ``received_at`` the operator gave; none given: answered when received)."""
    return _with_times(ledger_reports.responses(conn, action, period))


def _with_times(rows: list[dict[str, Any]]) -> dict[str, Any]:
    for r in rows:
        received = datetime.fromisoformat(r["received_at"]) if r.get("received_at") else r["at"]
        r["response_s"] = max(0.0, (r["at"] - received).total_seconds())
    times = [r["response_s"] for r in rows]
    return {"count": len(rows), "rows": rows, "worst_response_s": max(times, default=0.0),
            "mean_response_s": sum(times) / len(times) if times else 0.0}
