"""Helpers for the retention and data-subject-rights tests: scratch buckets, sources written
exactly as ingest writes them, and ledger reads."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from minio import Minio
from psycopg.rows import dict_row

from infra.objectstore import delete_all_versions, list_all_versions
from infra.policies import get_policy
from infra.settings import Settings
from producer.ingest import IngestOptions, IngestResult, _file_input, _ingest_one

VEIL = str(Path(sys.executable).parent / "veil")


def veil(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VEIL, *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


def rows(settings: Settings, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(settings.db.url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def execute(settings: Settings, sql: str, *params: Any) -> None:
    with psycopg.connect(settings.db.url) as conn:
        conn.execute(sql, params)  # type: ignore[arg-type]


def scratch_bucket(client: Minio, settings: Settings, suffix: str, *, versioned: bool,
                   object_lock: bool = False) -> Iterator[str]:
    """A bucket of this test slot's own; emptied (every version) and removed afterwards."""
    from minio.commonconfig import ENABLED
    from minio.versioningconfig import VersioningConfig
    name = f"{settings.broker.queue_prefix}-{suffix}".lower()
    if client.bucket_exists(name):  # left over by an interrupted run
        _empty_and_remove(client, name)
    client.make_bucket(name, object_lock=object_lock)
    if versioned and not object_lock:
        client.set_bucket_versioning(name, VersioningConfig(ENABLED))
    try:
        yield name
    finally:
        # the suite's clean-up deletes every recorded object: forget those of this bucket
        execute(settings, "DELETE FROM deletion_tasks WHERE bucket = %s", name)
        _empty_and_remove(client, name)


def _empty_and_remove(client: Minio, name: str) -> None:
    """Every version deleted (S3 legal holds lifted first), then the bucket."""
    from infra.objectstore import set_legal_hold, supports_object_lock
    locked = supports_object_lock(client, name)
    for key in {k for k, _ in list_all_versions(client, name)}:
        if locked:
            set_legal_hold(client, name, key, enabled=False)
        delete_all_versions(client, name, key)
    client.remove_bucket(name)


def ingest_file(settings: Settings, path: Path, *, raw_ttl_s: int | None = None,
                camera: str | None = None, policy: str | None = None,
                captured_at: datetime | None = None) -> IngestResult:
    """Write a source exactly as `veil ingest` does, without sending its task (it stays queued
    unless a relay or a test sends it)."""
    from infra.objectstore import client_for
    options = IngestOptions(get_policy(policy, settings), raw_ttl_s=raw_ttl_s, camera=camera,
                            captured_at=captured_at)
    result, row = _ingest_one(_file_input(path), options, settings, client_for("producer",
                                                                                settings))
    assert row is not None, result
    return result


def source_versions(client: Minio, settings: Settings, source_id: uuid.UUID | str,
                    raw_key: str) -> list[tuple[str, str, str | None]]:
    """Every stored version of a source in every bucket: raw original and `sources/<id>/`."""
    found = [(settings.s3.bucket_raw, k, v)
             for k, v in list_all_versions(client, settings.s3.bucket_raw, raw_key)]
    for bucket in settings.s3.buckets():
        found += [(bucket, k, v) for k, v in list_all_versions(client, bucket,
                                                                f"sources/{source_id}/")]
    return found
