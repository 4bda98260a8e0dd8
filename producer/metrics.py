"""Prometheus metrics from the ledger: `veil metrics` prints them, `--serve PORT` exports them.

Built on ``prometheus_client``: a custom collector queries the ledger at each scrape (three
small queries). The gauge that matters is ``veil_deletions_overdue``: alert on it above zero
for more than two purge intervals (a retention deadline missed must be loud, invariant 4).
Only counts and ages: no ids, names or keys (invariant 5).
"""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from infra import db, ledger_reports
from infra.settings import Settings
from schemas.enums import DeletionState, JobState

_DELETION_STATES = (DeletionState.PENDING, DeletionState.DEFERRED, DeletionState.FAILED,
                    DeletionState.DONE)  # the order of the exported lines


def collect(settings: Settings) -> dict[str, Any]:
    with db.connect(settings) as conn:
        return {"deletions": ledger_reports.deletion_gauges(conn),
                "jobs": ledger_reports.job_counts(conn),
                "holds": ledger_reports.active_hold_count(conn)}


class LedgerCollector(Collector):
    """Reads the ledger at each scrape (a gauge of rows, not a counter this process keeps)."""

    def __init__(self, settings: Settings | None, data: dict[str, Any] | None = None) -> None:
        self._settings, self._data = settings, data

    def collect(self) -> Iterator[GaugeMetricFamily]:
        data = self._data if self._data is not None else collect(self._settings)  # type: ignore[arg-type]
        d = data["deletions"]
        yield _gauge("veil_deletions_overdue", "Deletion tasks past their due time and not "
                     "done (excluding those deferred by a legal hold).", d.get("overdue", 0))
        yield _gauge("veil_deletions_oldest_overdue_seconds", "Age of the oldest overdue "
                     "deletion.", float(d.get("oldest_overdue_s", 0)))
        yield _gauge("veil_deletions", "Deletion tasks by state.", labels={
            str(s): d.get(s, 0) for s in _DELETION_STATES})
        yield _gauge("veil_legal_holds_active", "Sources under an active legal hold.",
                     data["holds"])
        yield _gauge("veil_jobs", "Jobs by state.", labels={
            str(s): data["jobs"].get(s, 0) for s in JobState})


def _gauge(name: str, help_text: str, value: float = 0,
           labels: dict[str, float] | None = None) -> GaugeMetricFamily:
    if labels is None:
        return GaugeMetricFamily(name, help_text, value=value)
    family = GaugeMetricFamily(name, help_text, labels=["state"])
    for state, count in labels.items():
        family.add_metric([state], count)
    return family


def render(data: dict[str, Any]) -> str:
    """The Prometheus text format of ``data`` (what `veil metrics` prints)."""
    registry = CollectorRegistry()
    registry.register(LedgerCollector(None, data))
    return generate_latest(registry).decode()


def make_server(settings: Settings, port: int,
                address: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """An HTTP server answering ``GET /metrics`` (call ``serve_forever`` on it)."""

    registry = CollectorRegistry()
    registry.register(LedgerCollector(settings))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics")
                return
            try:
                body = generate_latest(registry)
                status = 200
            except Exception as exc:  # the ledger is down: the scrape fails visibly
                body, status = f"# ledger unavailable: {type(exc).__name__}\n".encode(), 503
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return http.server.ThreadingHTTPServer((address, port), Handler)
