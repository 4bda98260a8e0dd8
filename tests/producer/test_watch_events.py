"""MinIO bucket events through Redis: the access-format entry parsed on its own, then a running
`veil watch` that ingests an upload as soon as its event is in the list (long before its next
listing sweep), once however often the event is delivered, with its Prometheus metrics."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
import redis

from producer.watch_events import BadEvent, parse_access_event
from tests.conftest import face_image, jpeg_bytes
from tests.watching import Inbox, inbox_rows, sources


def minio_access_event(bucket: str, key: str, version_id: str | None, size: int,
                       name: str = "s3:ObjectCreated:Put") -> str:
    """One entry as MinIO RPUSHes it with MINIO_NOTIFY_REDIS_FORMAT=access: a JSON array of
    {Event: [S3 event record], EventTime}, the key URL-encoded (fields as in MinIO's docs)."""
    from urllib.parse import quote_plus
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    record = {
        "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
        "eventTime": stamp, "eventName": name,
        "userIdentity": {"principalId": "veil-uploader"},
        "requestParameters": {"principalId": "veil-uploader", "region": "",
                              "sourceIPAddress": "10.0.0.7"},
        "responseElements": {"x-amz-id-2": "dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b6"
                             "58df7ac2e3e8", "x-amz-request-id": "17C5B4B1A9D5E2F0",
                             "x-minio-origin-endpoint": "http://10.0.0.2:9000"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
               "bucket": {"name": bucket, "ownerIdentity": {"principalId": "minio"},
                          "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": quote_plus(key), "size": size,
                          "eTag": "0b6f1b6b1b1b4b6f8c7a3d2e1f0a9b8c",
                          "contentType": "image/jpeg", "userMetadata": {
                              "content-type": "image/jpeg"},
                          **({"versionId": version_id} if version_id else {}),
                          "sequencer": "17C5B4B1A9E0C3D4"}},
        "source": {"host": "10.0.0.7", "port": "", "userAgent": "MinIO (linux; amd64) mc"},
    }
    return json.dumps([{"Event": [record], "EventTime": stamp}])


def test_an_access_format_entry_names_the_created_object_decoded() -> None:
    raw = minio_access_event("veil-inbox", "gate north/2024/a b+c.jpg", "v1", 1234)
    [event] = parse_access_event(raw)
    assert (event.bucket, event.key, event.version_id, event.size) == (
        "veil-inbox", "gate north/2024/a b+c.jpg", "v1", 1234)
    assert event.event_time is not None and event.event_time.tzinfo is not None


def test_removals_name_nothing_and_garbage_is_refused() -> None:
    assert parse_access_event(minio_access_event("b", "k", None, 0,
                                                 name="s3:ObjectRemoved:Delete")) == []
    with pytest.raises(BadEvent, match="not a MinIO bucket event"):
        parse_access_event(b"{not json")
    with pytest.raises(BadEvent):
        parse_access_event(json.dumps([{"Event": [{"eventName": "s3:ObjectCreated:Put"}]}]))


def test_a_running_watcher_ingests_on_the_event_once_and_exports_metrics(
        inbox: Inbox, unique_seed: int) -> None:
    # given a running watcher whose listing sweep comes only every 10 minutes
    key = f"veil-test-events-{uuid.uuid4().hex[:8]}"
    events = redis.Redis.from_url(inbox.settings.broker.url)
    proc = inbox.popen("watch", "--metrics-port", "0",
                       env={"VEIL_WATCH__POLL_S": "600", "VEIL_WATCH__EVENTS_KEY": key})
    try:
        assert proc.stderr is not None
        url = proc.stderr.readline().split()[-1]
        _until(lambda: bool(_sweeps(inbox)), "the first sweep")
        # when an upload arrives and MinIO's event for it lands in Redis, twice, plus garbage
        data = jpeg_bytes(face_image(unique_seed))
        version = inbox.put("gate/a.jpg", data)
        entry = minio_access_event(inbox.bucket, inbox.prefix + "gate/a.jpg", version, len(data))
        events.rpush(key, "garbage", entry, entry)
        # then it is ingested within seconds, once, and gone from the inbox
        _until(lambda: inbox.emptied() == [] and len(inbox_rows(inbox.settings)) == 1,
               "the event's ingest")
        _until(lambda: events.llen(key) == 0 and events.llen(f"{key}:processing") == 0,
               "the events consumed")
        assert [s["camera"] for s in sources(inbox.settings)] == ["gate"]
        assert [r["outcome"] for r in inbox_rows(inbox.settings)] == ["ingested"]
        # and the metrics say one ingested, one released again (the second delivery)
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        assert 'veil_watch_objects_total{outcome="ingested"} 1.0\n' in body
        assert 'veil_watch_objects_total{outcome="released"} 1.0\n' in body
        assert "veil_watch_ingest_latency_seconds_count 2.0\n" not in body
        assert "veil_watch_ingest_latency_seconds_count 1.0\n" in body
        assert "veil_watch_paused 0.0\n" in body and "veil_watch_inbox_backlog" in body
        assert "gate" not in body and "a.jpg" not in body  # no names in metrics (invariant 5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        events.delete(key, f"{key}:processing")
    assert proc.returncode == 0


def _sweeps(inbox: Inbox) -> int:
    from tests.rights import rows
    found = rows(inbox.settings, "SELECT sweeps FROM inbox_cursors WHERE prefix = %s",
                 inbox.prefix)
    return int(found[0]["sweeps"]) if found else 0


def _until(check, what: str, timeout_s: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_compose_sends_minio_inbox_events_where_the_watcher_reads_them() -> None:
    import yaml

    from infra.settings import Settings
    from tests.conftest import REPO
    services = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    minio_env, init = services["minio"]["environment"], "\n".join(services["minio-init"]["command"])
    defaults = Settings().watch
    # MinIO publishes to the broker's Redis, on the list and in the format the watcher reads
    assert minio_env["MINIO_NOTIFY_REDIS_ENABLE_VEIL"] == "on"
    assert minio_env["MINIO_NOTIFY_REDIS_KEY_VEIL"] == defaults.events_key
    assert minio_env["MINIO_NOTIFY_REDIS_FORMAT_VEIL"] == "access"
    # (the same Redis server and database 0; MinIO's target has no TLS setting, so it writes to
    # the server's internal plaintext port while the watcher reads over TLS)
    broker = urlsplit(services["watch"]["environment"]["VEIL_BROKER__URL"])
    assert broker.hostname == minio_env["MINIO_NOTIFY_REDIS_ADDRESS_VEIL"].split(":")[0]
    assert broker.path == "/0"
    assert "6380" in services["redis"]["command"] and "ports" not in services["redis"]
    # and the set-up step subscribes the inbox bucket's uploads to that target
    assert "mc event add --ignore-existing veil/veil-inbox arn:minio:sqs::veil:redis" \
        " --event put" in init
    assert services["watch"]["command"][:2] == ["veil", "watch"]
