"""The audit trail and the loud signals an operator sees: `veil audit`, the overdue warning of
`veil status`, and the Prometheus metrics, against the real ledger."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from infra.settings import Settings
from producer.holds import release_hold, set_hold
from tests.conftest import face_image, jpeg_bytes
from tests.rights import VEIL, ingest_file, veil
from workers.retention.erase import erase_source


def test_audit_shows_who_did_what_and_survives_erasure(
        clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> None:
    # given a source ingested, held, released and erased by named operators
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(face_image(unique_seed)))
    src = ingest_file(clean_ledger, tmp_path / "a.jpg")
    sid = src.source_id
    time.sleep(0.05)
    after_ingest = datetime.now(UTC)
    set_hold(clean_ledger, sid, "case 1", "operator:alice")  # type: ignore[arg-type]
    release_hold(clean_ledger, sid, "case closed", "operator:alice")  # type: ignore[arg-type]
    erase_source(clean_ledger, sid, "request 7", "operator:bob")  # type: ignore[arg-type]

    # when the trail is read for the source
    run = veil("audit", "--source", str(sid), "--json")
    assert run.returncode == 0, run.stderr
    events = json.loads(run.stdout)
    # then every step is there in order, with its actor, even though the source was erased
    assert [(e["action"], e["actor"]) for e in events] == [
        ("ingest", "producer"), ("hold_set", "operator:alice"),
        ("hold_release", "operator:alice"), ("erase", "operator:bob")]
    assert events[-1]["detail"]["reason"] == "request 7"
    assert all(e["source_id"] == str(sid) for e in events)
    # and --since and --action filter it; the text form names actor and action per line
    since = veil("audit", "--source", str(sid), "--since", after_ingest.isoformat(), "--json")
    assert [e["action"] for e in json.loads(since.stdout)] == [
        "hold_set", "hold_release", "erase"]
    text = veil("audit", "--source", str(sid), "--action", "erase").stdout.strip().splitlines()
    assert len(text) == 1 and "operator:bob" in text[0] and "request 7" in text[0]
    # and the erased source's events cannot be rewritten, even by the database owner
    with psycopg.connect(clean_ledger.db.url) as conn, pytest.raises(
            psycopg.errors.InsufficientPrivilege, match="append-only"):
        conn.execute("UPDATE audit_events SET source_id = NULL WHERE source_id = %s", (sid,))


def test_overdue_deletions_are_loud_in_status_and_metrics(
        clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> None:
    # given a raw original whose deadline passed and no purge running
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(face_image(unique_seed)))
    ingest_file(clean_ledger, tmp_path / "a.jpg", raw_ttl_s=1)
    time.sleep(1.1)
    # then `veil status` shouts on stderr
    run = veil("status")
    assert run.returncode == 0
    assert "overdue 1" in run.stdout and "1 deletions are OVERDUE" in run.stderr
    # and the metrics exporter reports it over HTTP
    proc = subprocess.Popen([VEIL, "metrics", "--serve", "0"], stderr=subprocess.PIPE,
                            text=True, env=os.environ.copy())
    try:
        assert proc.stderr is not None
        url = proc.stderr.readline().split()[-1]
        body = urllib.request.urlopen(url, timeout=10).read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "veil_deletions_overdue 1.0\n" in body
    assert 'veil_jobs{state="queued"} 1.0\n' in body
    # and once purged, the alarm is gone
    assert veil("purge", "--now").returncode == 0
    assert "OVERDUE" not in veil("status").stderr
    assert "veil_deletions_overdue 0.0\n" in veil("metrics").stdout
