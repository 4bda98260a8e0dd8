"""Fixtures of the purge tests: the admin S3 client, a key prefix of the test's own (every
version under it deleted afterwards), and due objects written as the pipeline writes them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from minio import Minio

from infra import db, ledger
from infra.objectstore import client_for, delete_all_versions, list_all_versions, put_bytes
from infra.settings import Settings
from producer.ingest import IngestResult
from tests.conftest import face_image, jpeg_bytes
from tests.rights import execute, ingest_file


@pytest.fixture()
def admin(clean_ledger: Settings) -> Minio:
    return client_for("admin", clean_ledger)


@pytest.fixture()
def prefix(admin: Minio, clean_ledger: Settings) -> Iterator[str]:
    prefix = f"test-purge-{uuid.uuid4().hex}/"
    yield prefix
    for bucket in clean_ledger.s3.buckets():
        for key in {k for k, _ in list_all_versions(admin, bucket, prefix)}:
            delete_all_versions(admin, bucket, key)


@pytest.fixture()
def missing_bucket(clean_ledger: Settings) -> Iterator[str]:
    """A bucket name no server has; its tasks are removed afterwards (the suite's clean-up
    deletes the objects of every task, and this bucket cannot be listed)."""
    name = f"{clean_ledger.broker.queue_prefix}-no-such-bucket"
    yield name
    execute(clean_ledger, "DELETE FROM deletion_tasks WHERE bucket = %s", name)


def store_due(settings: Settings, client: Minio, bucket: str, key: str, due_in_s: float,
              versions: int = 1) -> None:
    """Store ``versions`` versions of an object and its deletion task, due in ``due_in_s``."""
    for i in range(versions):
        put_bytes(client, bucket, key, f"{key} v{i}".encode())
    with db.transaction(settings) as conn:
        ledger.schedule_deletion(conn, None, bucket, key,
                                 datetime.now(UTC) + timedelta(seconds=due_in_s), "test")


def ingest_due(settings: Settings, folder: Path, seed: int) -> IngestResult:
    """A source ingested with a raw retention of 1 s, returned once that has run out."""
    path = folder / "due.jpg"
    path.write_bytes(jpeg_bytes(face_image(seed)))
    result = ingest_file(settings, path, raw_ttl_s=1)
    assert result.source_id is not None
    time.sleep(1.1)
    return result
