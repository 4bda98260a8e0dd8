"""The watcher's Prometheus metrics (`veil watch --metrics-port`), with ``prometheus_client``.

Counts and durations only, labelled by outcome and bucket: never a key, camera or file name
(invariant 5). Alert on ``veil_watch_inbox_backlog`` growing while ``veil_watch_paused`` is 0
(the watcher cannot keep up) or on it being 1 for long (the workers cannot).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class WatchMetrics:
    """One registry per watcher, so tests and `veil metrics` never see each other's series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.backlog = Gauge("veil_watch_inbox_backlog", "Inbox object versions listed and not "
                             "yet handled.", ["bucket"], registry=self.registry)
        self.objects = Counter("veil_watch_objects", "Inbox object versions handled, by "
                               "outcome.", ["outcome"], registry=self.registry)
        self.duplicates = Counter("veil_watch_duplicates", "Uploads whose bytes were already a "
                                  "source (removed from the inbox).", registry=self.registry)
        self.latency = Histogram("veil_watch_ingest_latency_seconds", "From upload (the object's "
                                 "last-modified time) to its source committed.",
                                 buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
                                 registry=self.registry)
        self.paused = Gauge("veil_watch_paused", "1 while the job queue is deeper than "
                            "VEIL_WATCH__MAX_QUEUE_DEPTH.", registry=self.registry)
        self.queue_depth = Gauge("veil_watch_queue_depth", "Job queue depth the watcher last "
                                 "saw.", registry=self.registry)
        for outcome in ("ingested", "duplicate", "rejected", "refused", "released", "kept"):
            self.objects.labels(outcome)

    def serve(self, port: int, address: str = "127.0.0.1") -> int:
        """Serve /metrics in a background thread; returns the port (0 picks a free one)."""
        server, _ = start_http_server(port, address, registry=self.registry)
        return int(server.server_port)
