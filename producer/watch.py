"""`veil watch`: ingest whatever lands in the inbox, with nobody running a command (issue 18).

Two ways to learn of uploads, one way to ingest them (:func:`producer.watch_inbox.
handle_object`):

- **Listing sweeps** (every server; the only way on SeaweedFS): list every object version in
  key order from a cursor kept in PostgreSQL (``inbox_cursors``), handle each, move the cursor.
  A restarted watcher goes on where it stopped; a finished sweep starts again from the top, so
  an upload whose key sorts behind the cursor is found on the next sweep.
- **Bucket events** (MinIO, published to a Redis list): each event's objects are handled at
  once, so latency is that of the ingest, not of the sweep interval. See ``watch_events``.

Either may deliver an object twice; the ledger makes that harmless. Backpressure: before each
object the watcher reads the job queue's depth and waits while it is above
``VEIL_WATCH__MAX_QUEUE_DEPTH`` (the inbox is the buffer, not Redis).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import redis
import redis.exceptions
from celery import Celery

from infra import db, ledger_inbox
from infra.broker import JOB_QUEUES, queue_name
from infra.objectstore import TransientStorageError, client_for
from infra.settings import Settings
from producer.cameras import CameraBook
from producer.watch_events import EventQueue
from producer.watch_inbox import Handled, InboxObject, handle_object, list_inbox
from producer.watch_metrics import WatchMetrics
from schemas import messages

log = logging.getLogger(__name__)


@dataclass
class WatchSummary:
    """What one run saw: counts by outcome, and each object that needs a person's attention."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str | None]] = field(default_factory=list)
    duplicates: list[dict[str, str | None]] = field(default_factory=list)

    def add(self, handled: Handled) -> None:
        self.counts[handled.outcome] += 1
        entry = {"bucket": handled.obj.bucket, "key": handled.obj.key,
                 "version_id": handled.obj.version_id, "reason": handled.reason,
                 "source_id": str(handled.result.source_id) if handled.result and
                 handled.result.source_id else None}
        if handled.outcome in ("rejected", "refused", "kept"):
            self.problems.append(entry)
        elif handled.outcome == "duplicate":
            self.duplicates.append(entry)


class Watcher:
    def __init__(self, settings: Settings, app: Celery, book: CameraBook,
                 metrics: WatchMetrics | None = None,
                 echo: Callable[[str], None] = lambda line: None,
                 stop: Callable[[], bool] = lambda: False) -> None:
        """``stop``: asked between objects (SIGTERM); a stopped watcher leaves its cursor where
        it was, so the next start goes on from there."""
        self.settings, self.app, self.book, self.echo, self.stop = settings, app, book, echo, stop
        self.metrics = metrics or WatchMetrics()
        self.client = client_for("producer", settings)
        self.broker = redis.Redis.from_url(settings.broker.url)
        self.buckets = settings.watch.buckets or [settings.s3.bucket_inbox]
        self.summary = WatchSummary()
        self.handed_over = 0  # inbox copies scheduled for deletion since the purge was woken

    # --- one object -----------------------------------------------------------------------

    def handle(self, obj: InboxObject) -> Handled:
        self.wait_for_room(obj.bucket)
        handled = handle_object(obj, self.settings, self.app, self.book, self.client)
        self.summary.add(handled)
        self.handed_over += handled.outcome in ("ingested", "duplicate", "released")
        self.metrics.objects.labels(handled.outcome).inc()
        if handled.outcome == "duplicate":
            self.metrics.duplicates.inc()
            self.echo(f"duplicate: {obj.bucket}/{obj.key} holds the bytes of source "
                      f"{handled.result.source_id if handled.result else '?'}; removed")
        elif handled.outcome in ("rejected", "refused"):
            self.echo(f"{handled.outcome}: {obj.bucket}/{obj.key}: {handled.reason}")
        if handled.outcome in ("ingested", "duplicate") and obj.uploaded_at is not None:
            self.metrics.latency.observe(
                max((datetime.now(UTC) - obj.uploaded_at).total_seconds(), 0.0))
        return handled

    def wake_retention(self) -> None:
        """Send one purge for the inbox copies handed over since the last call (due now), not
        one per object; if this is lost, beat's purge finds them within its interval."""
        if self.handed_over:
            self.app.send_task(messages.PURGE)
            self.handed_over = 0

    def queue_depth(self) -> int:
        """Messages waiting in every job workload's queue (images, chunks, assembly): one job
        each, except a bulk ingest's image batches (up to ``limits.images_per_task`` jobs)."""
        return sum(int(self.broker.llen(queue_name(self.settings, q)))  # type: ignore[arg-type]
                   for q in JOB_QUEUES)

    def wait_for_room(self, bucket: str) -> None:
        """Backpressure: wait while the job queue is deeper than the setting."""
        limit, paused = self.settings.watch.max_queue_depth, False
        while (depth := self.queue_depth()) > limit and not self.stop():
            self.metrics.queue_depth.set(depth)
            if not paused:
                paused = True
                self.metrics.paused.set(1)
                self._save_paused(bucket, True)
                self.echo(f"paused: {depth} jobs queued, above {limit}")
            time.sleep(min(self.settings.watch.poll_s, 1.0))
        self.metrics.queue_depth.set(depth)
        if paused:
            self.metrics.paused.set(0)
            self._save_paused(bucket, False)
            self.echo("resumed")

    def _save_paused(self, bucket: str, paused: bool) -> None:
        prefix = self.settings.watch.prefix
        with db.connect(self.settings, autocommit=True) as conn:
            ledger_inbox.save_inbox_cursor(conn, ledger_inbox.InboxPrefix(bucket, prefix),
                                           ledger_inbox.inbox_cursor(conn, bucket, prefix),
                                           paused=paused)

    # --- listing sweeps ----------------------------------------------------------------------

    def sweep(self, bucket: str) -> int:
        """One pass from the durable cursor to the end of the listing; returns objects seen.
        The cursor moves after each object, so a SIGKILL costs at most one object's re-check."""
        prefix = self.settings.watch.prefix
        where = ledger_inbox.InboxPrefix(bucket, prefix)
        with db.connect(self.settings, autocommit=True) as conn:
            start = ledger_inbox.inbox_cursor(conn, bucket, prefix)
            pending = list(list_inbox(self.client, bucket, prefix, start))
            ledger_inbox.save_inbox_cursor(conn, where, start, backlog=len(pending))
            self.metrics.backlog.labels(bucket).set(len(pending))
            stuck = 0
            for left, obj in enumerate(pending, 1):
                if self.stop():
                    self.wake_retention()
                    return left - 1
                try:
                    stuck += self.handle(obj).outcome in ("rejected", "refused", "kept")
                except TransientStorageError as exc:  # the next sweep tries it again
                    log.warning("inbox %s: %s", bucket, exc)
                    stuck += 1
                self.metrics.backlog.labels(bucket).set(len(pending) - left + stuck)
                ledger_inbox.save_inbox_cursor(conn, where, obj.key,
                                               backlog=len(pending) - left + stuck)
            # refused and rejected uploads stay in the inbox: the backlog a person must look at
            ledger_inbox.save_inbox_cursor(conn, where, "", sweep_done=True, backlog=stuck)
        self.wake_retention()
        return len(pending)

    def run_once(self) -> WatchSummary:
        """Ingest what is in the inbox now and return: a sweep from the cursor, and when the
        cursor was mid-way (a run was killed), one more from the top."""
        for bucket in self.buckets:
            with db.connect(self.settings) as conn:
                resumed = ledger_inbox.inbox_cursor(conn, bucket, self.settings.watch.prefix) != ""
            self.sweep(bucket)
            if resumed:
                self.sweep(bucket)
        return self.summary

    # --- forever -----------------------------------------------------------------------------

    def run_forever(self) -> None:
        """Sweep every ``poll_s``; between sweeps, handle bucket events as they come. A service
        that is down (S3, PostgreSQL, Redis) is waited for, with a log line, not a crash."""
        watch, stop = self.settings.watch, self.stop
        events = EventQueue(watch.events_url or self.settings.broker.url, watch.events_key) \
            if watch.events_key else None
        if events is not None and (back := events.recover()):
            log.info("re-queued %d bucket events left by a stopped watcher", back)
        while not stop():
            for bucket in self.buckets:
                _survive(lambda b=bucket: self.sweep(b))  # type: ignore[misc]
            deadline = time.monotonic() + watch.poll_s
            while not stop() and (left := deadline - time.monotonic()) > 0:
                if events is None or not _survive(lambda: self._take_event(events, 1.0)):
                    time.sleep(min(left, 1.0))

    def _take_event(self, events: EventQueue, timeout_s: float) -> bool:
        taken = events.take(timeout_s)
        if taken is None:
            return True
        raw, objects = taken
        prefix = self.settings.watch.prefix
        for event in objects:
            if event.bucket in self.buckets and event.key.startswith(prefix):
                self.handle(InboxObject(event.bucket, event.key, event.version_id, event.size,
                                        event.event_time))
        events.done(raw)
        self.wake_retention()
        return True


_OUTAGES = (TransientStorageError, psycopg.OperationalError, redis.exceptions.ConnectionError)


def _survive(step: Callable[[], object]) -> bool:
    """Run one step of the forever loop; an outage of a service is logged and waited out
    (False), anything else is a bug and stops the watcher loudly."""
    try:
        step()
    except _OUTAGES as exc:
        log.warning("watch: a service is unavailable, retrying: %s: %s",
                    type(exc).__name__, exc)
        return False
    return True
