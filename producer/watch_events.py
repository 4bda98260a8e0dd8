"""MinIO bucket events from Redis: low-latency hints for `veil watch` (issue 18).

MinIO publishes bucket notifications to a Redis list when configured with
``MINIO_NOTIFY_REDIS_FORMAT_<ID>=access``: each ``RPUSH`` is a JSON array of
``{"Event": [<S3 event record>], "EventTime": "..."}``, and each record names the bucket, the
object key (URL-encoded, as in S3 event notifications) and its version. SeaweedFS sends none,
and MinIO drops events while Redis is unreachable (unless its queue dir is set), so events are
only hints: the listing sweep stays the ground truth, and an event for an object that is gone
or already ingested costs a ledger lookup.

Delivery is at least once: an event is moved (``BLMOVE``) to a processing list and removed
from it only after every object it names was handled, so a watcher killed mid-event leaves it
there and the next start puts it back on the main list.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectEvent:
    """One object named by a bucket event: created (uploaded) with this version and size."""

    bucket: str
    key: str
    version_id: str | None
    size: int
    event_time: datetime | None


class BadEvent(ValueError):
    """A list entry that is not a MinIO access-format event; it is logged and dropped."""


def parse_access_event(raw: bytes | str) -> list[ObjectEvent]:
    """The objects created by one access-format entry (removals and other events: none)."""
    try:
        entries = json.loads(raw)
        if isinstance(entries, dict):  # namespace-style {"Records": [...]} is accepted too
            entries = [{"Event": entries.get("Records", [])}]
        records = [record for entry in entries for record in entry.get("Event") or []]
        return [event for record in records if (event := _object_event(record)) is not None]
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise BadEvent(f"not a MinIO bucket event: {type(exc).__name__}: {exc}") from exc


def _object_event(record: dict[str, object]) -> ObjectEvent | None:
    name = str(record.get("eventName", ""))
    if not name.startswith("s3:ObjectCreated:"):
        return None
    s3 = record["s3"]
    assert isinstance(s3, dict)
    obj, bucket = s3["object"], s3["bucket"]
    stamp = record.get("eventTime")
    return ObjectEvent(
        bucket=str(bucket["name"]),
        key=unquote_plus(str(obj["key"])),
        version_id=str(obj["versionId"]) if obj.get("versionId") else None,
        size=int(obj.get("size") or 0),
        event_time=datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None,
    )


class EventQueue:
    """The Redis list MinIO fills, consumed reliably through a processing list."""

    def __init__(self, url: str, key: str) -> None:
        self._redis = redis.Redis.from_url(url)
        self.key, self.processing = key, f"{key}:processing"

    def recover(self) -> int:
        """Put back entries a killed watcher left in processing; returns how many."""
        moved = 0
        while self._redis.lmove(self.processing, self.key, "RIGHT", "LEFT") is not None:
            moved += 1
        return moved

    def take(self, timeout_s: float) -> tuple[bytes, list[ObjectEvent]] | None:
        """The next entry and its objects, waiting up to ``timeout_s``; None when none came.
        A malformed entry is dropped with a log line (it names no object to lose)."""
        raw: bytes | None = self._redis.blmove(  # type: ignore[assignment]
            self.key, self.processing, timeout_s, "LEFT", "RIGHT")  # type: ignore[arg-type]
        if raw is None:
            return None
        try:
            return raw, parse_access_event(raw)
        except BadEvent as exc:
            log.warning("dropping a bucket event: %s", exc)
            self.done(raw)
            return raw, []

    def done(self, raw: bytes) -> None:
        self._redis.lrem(self.processing, 1, raw)  # type: ignore[arg-type]

    def depth(self) -> int:
        return int(self._redis.llen(self.key))  # type: ignore[arg-type]
