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

from infra import db, ledger
from infra.db import Conn
from infra.policies import load_policies
from infra.settings import Settings


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
    window = {"from": start, "to": end}
    with db.connect(settings) as conn:
        data = {
            "period": {"from": start.isoformat(), "to": end.isoformat()},
            "generated_at": datetime.now(UTC).isoformat(),
            "policies": _policies(settings),
            "policies_in_ledger": _rows(conn, _POLICIES_USED, window),
            "recordings": _rows(conn, _RECORDINGS, window),
            "quality": load_quality(),
            "guard": _rows(conn, _GUARD, window),
            "guard_failures": _one(conn, _GUARD_FAILED, window)["n"],
            "deletions": _deletions(conn, window, grace),
            "erasures": _responses(conn, "erase", window),
            "withdrawals": _responses(conn, "consent_withdraw", window),
            "access_requests": _access_requests(conn, window),
            "consents": _one(conn, _CONSENTS, window),
            "holds": _rows(conn, _HOLDS, window),
            "raw_access": _rows(conn, _RAW_ACCESS, window),
            "reveals": _rows(conn, _REVEALS, window),
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


_POLICIES_USED = """
SELECT policy_name, policy_version, coalesce(legal_basis, policy->'legal_basis'->>'art6',
       'not declared') AS legal_basis, count(*) AS sources
FROM sources WHERE created_at >= %(from)s AND created_at < %(to)s
GROUP BY 1, 2, 3 ORDER BY 1, 2"""

_RECORDINGS = """
SELECT CASE WHEN erased_at IS NOT NULL THEN '(erased)' ELSE coalesce(camera, '(none)') END
       AS camera, policy_name, kind, count(*) AS sources, coalesce(sum(duration_s), 0) AS seconds
FROM sources WHERE created_at >= %(from)s AND created_at < %(to)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""

_GUARD = """
SELECT a.stage, coalesce(a.params->'guard'->>'action', 'none') AS action, count(*) AS outputs,
       coalesce(sum((a.params->'guard'->>'weak')::int), 0) AS weak,
       coalesce(sum((a.params->'guard'->>'miss')::int), 0) AS miss
FROM artifacts a WHERE a.stage IN ('redact', 'chunk')
  AND a.created_at >= %(from)s AND a.created_at < %(to)s AND a.params ? 'guard'
GROUP BY 1, 2 ORDER BY 1, 2"""

_GUARD_FAILED = """
SELECT count(*) AS n FROM jobs WHERE state = 'failed' AND error ILIKE '%%guard%%'
  AND finished_at >= %(from)s AND finished_at < %(to)s"""

_CONSENTS = """
SELECT count(*) FILTER (WHERE given_at >= %(from)s AND given_at < %(to)s) AS given,
       count(*) FILTER (WHERE withdrawn_at >= %(from)s AND withdrawn_at < %(to)s) AS withdrawn,
       count(*) FILTER (WHERE withdrawn_at IS NULL AND given_at < %(to)s
                        AND (expires_at IS NULL OR expires_at > %(to)s)) AS active_at_end,
       count(*) FILTER (WHERE wording_version IS NULL) AS without_wording_version
FROM consents"""

_HOLDS = """
SELECT h.id, h.source_id, h.set_at, h.set_by, h.reason, h.released_at, h.released_by,
       h.forbids_reveal,
       (SELECT count(*) FROM deletion_tasks d WHERE d.source_id = h.source_id
         AND d.state = 'deferred') AS deletions_deferred
FROM legal_holds h WHERE h.set_at < %(to)s AND (h.released_at IS NULL
  OR h.released_at >= %(from)s) ORDER BY h.set_at"""

_RAW_ACCESS = """
SELECT split_part(actor, '@', 1) AS actor, action, count(*) AS events,
       count(DISTINCT source_id) AS sources
FROM audit_events WHERE action IN ('raw_read', 'raw_reveal')
  AND at >= %(from)s AND at < %(to)s GROUP BY 1, 2 ORDER BY 1, 2"""

_REVEALS = """
SELECT at, actor, source_id, detail->'regions' AS regions FROM audit_events
WHERE action = 'raw_reveal' AND at >= %(from)s AND at < %(to)s ORDER BY at"""

_DELETIONS = """
SELECT bucket, reason, state, due_at, done_at, least(coalesce(done_at, now()), now()) - due_at
       AS delay
FROM deletion_tasks WHERE (due_at >= %(from)s OR state <> 'done')
  AND due_at < least(%(to)s, now()) AND due_at < %(keep)s"""


def _deletions(conn: Conn, window: dict[str, Any], grace: timedelta) -> dict[str, Any]:
    """Deletions due in the period, and earlier ones still not done (an overdue deletion is
    never left out because its due time is older than the period): done on time, done late,
    overdue (not done yet), deferred by a legal hold; the worst delay; delays for the plot."""
    rows = conn.execute(_DELETIONS, {**window, "keep": ledger.KEEP_UNTIL_ERASED}).fetchall()
    out: dict[str, Any] = {"due": len(rows), "on_time": 0, "late": 0, "overdue": 0,
                           "deferred": 0, "worst_delay_s": 0.0, "delays_min": [],
                           "by_bucket": {}}
    for r in rows:
        seconds = max(0.0, r["delay"].total_seconds())
        bucket = out["by_bucket"].setdefault(r["bucket"], {"on_time": 0, "late": 0,
                                                           "overdue": 0, "deferred": 0})
        if r["state"] == "deferred":
            kind = "deferred"
        elif r["state"] == "done":
            kind = "on_time" if seconds <= grace.total_seconds() else "late"
            out["delays_min"].append(round(seconds / 60, 2))
        else:
            kind = "on_time" if seconds <= grace.total_seconds() else "overdue"
        out[kind] += 1
        bucket[kind] += 1
        if kind != "deferred":
            out["worst_delay_s"] = max(out["worst_delay_s"], seconds)
    return out


def _responses(conn: Conn, action: str, window: dict[str, Any]) -> dict[str, Any]:
    """Requests answered by ``action`` events, with their response times (event time minus
    the ``received_at`` the operator gave; none given: answered when received)."""
    rows = conn.execute(
        "SELECT at, actor, source_id, detail->>'received_at' AS received_at,"
        " detail->>'reason' AS reason, detail->>'ref' AS ref FROM audit_events"
        " WHERE action = %(action)s AND at >= %(from)s AND at < %(to)s ORDER BY at",
        {**window, "action": action}).fetchall()
    return _with_times([dict(r) for r in rows])


def _access_requests(conn: Conn, window: dict[str, Any]) -> dict[str, Any]:
    """Access requests answered: the events of one export share their transaction time."""
    rows = conn.execute(
        "SELECT at, actor, camera, received_at, count(*) AS sources, bool_or(revealed)"
        " AS revealed FROM (SELECT at, actor, detail->>'camera' AS camera,"
        " detail->>'received_at' AS received_at, jsonb_array_length(coalesce("
        "detail->'revealed_regions', '[]'::jsonb)) > 0 AS revealed FROM audit_events"
        " WHERE action = 'dsar_export' AND at >= %(from)s AND at < %(to)s) e"
        " GROUP BY at, actor, camera, received_at ORDER BY at",
        window).fetchall()
    return _with_times([dict(r) for r in rows])


def _with_times(rows: list[dict[str, Any]]) -> dict[str, Any]:
    for r in rows:
        received = datetime.fromisoformat(r["received_at"]) if r.get("received_at") else r["at"]
        r["response_s"] = max(0.0, (r["at"] - received).total_seconds())
    times = [r["response_s"] for r in rows]
    return {"count": len(rows), "rows": rows, "worst_response_s": max(times, default=0.0),
            "mean_response_s": sum(times) / len(times) if times else 0.0}


def _rows(conn: Conn, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(r) for r in conn.execute(sql, params).fetchall()]  # type: ignore[call-overload]


def _one(conn: Conn, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(sql, params).fetchone()  # type: ignore[call-overload]
    return dict(row) if row else {}
