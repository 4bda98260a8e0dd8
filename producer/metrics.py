"""Prometheus metrics from the ledger: `veil metrics` prints them, `--serve PORT` exports them.

No Prometheus client library: the text format is a few lines, and a scrape runs four small
queries. The gauge that matters is ``veil_deletions_overdue``: alert on it above zero for more
than two purge intervals (a retention deadline missed must be loud, invariant 4).
Only counts and ages: no ids, names or keys (invariant 5).
"""

from __future__ import annotations

import http.server
from typing import Any

from infra import db
from infra.settings import Settings

_DELETIONS_SQL = """
SELECT count(*) FILTER (WHERE state IN ('pending', 'failed') AND due_at <= now()) AS overdue,
       count(*) FILTER (WHERE state = 'pending') AS pending,
       count(*) FILTER (WHERE state = 'deferred') AS deferred,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       count(*) FILTER (WHERE state = 'done') AS done,
       coalesce(extract(epoch FROM now() - min(due_at)
                FILTER (WHERE state IN ('pending', 'failed') AND due_at <= now())), 0)
           AS oldest_overdue_s
FROM deletion_tasks
"""


def collect(settings: Settings) -> dict[str, Any]:
    with db.connect(settings) as conn:
        deletions = conn.execute(_DELETIONS_SQL).fetchone() or {}
        jobs = {r["state"]: r["n"] for r in conn.execute(
            "SELECT state, count(*) AS n FROM jobs GROUP BY state")}
        holds = conn.execute("SELECT count(*) AS n FROM legal_holds"
                             " WHERE released_at IS NULL").fetchone()
    return {"deletions": dict(deletions), "jobs": jobs, "holds": holds["n"] if holds else 0}


def render(data: dict[str, Any]) -> str:
    d = data["deletions"]
    lines = []

    def gauge(name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} gauge"])
        lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    gauge("veil_deletions_overdue", "Deletion tasks past their due time and not done "
          "(excluding those deferred by a legal hold).", [("", d.get("overdue", 0))])
    gauge("veil_deletions_oldest_overdue_seconds", "Age of the oldest overdue deletion.",
          [("", float(d.get("oldest_overdue_s", 0)))])
    gauge("veil_deletions", "Deletion tasks by state.",
          [(f'{{state="{s}"}}', d.get(s, 0)) for s in ("pending", "deferred", "failed", "done")])
    gauge("veil_legal_holds_active", "Sources under an active legal hold.",
          [("", data["holds"])])
    gauge("veil_jobs", "Jobs by state.",
          [(f'{{state="{s}"}}', data["jobs"].get(s, 0))
           for s in ("queued", "running", "succeeded", "failed", "cancelled")])
    return "\n".join(lines) + "\n"


def make_server(settings: Settings, port: int,
                address: str = "127.0.0.1") -> http.server.ThreadingHTTPServer:
    """An HTTP server answering ``GET /metrics`` (call ``serve_forever`` on it)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0] != "/metrics":
                self.send_error(404, "only /metrics")
                return
            try:
                body = render(collect(settings)).encode()
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
