"""Helpers for the `veil watch` tests: a private inbox prefix per test, uploads through the
minio client, `veil` runs with the watcher's settings, and ledger reads."""

from __future__ import annotations

import io
import os
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from minio import Minio

from infra.objectstore import client_for, list_all_versions
from infra.settings import Settings
from tests.rights import VEIL, rows


class Inbox:
    """A prefix of the shared inbox bucket that only this test uses (the S3 server and its
    buckets are shared: a watcher limited to the prefix sees nothing of anyone else's)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = settings.s3.bucket_inbox
        self.prefix = f"{settings.broker.queue_prefix}-w{uuid.uuid4().hex[:8]}/"
        self.client: Minio = client_for("admin", settings)  # an uploader's put, as any client
        self.env = {"VEIL_WATCH__PREFIX": self.prefix, "VEIL_WATCH__POLL_S": "0.5"}

    def put(self, key: str, data: bytes) -> str | None:
        result = self.client.put_object(self.bucket, self.prefix + key, io.BytesIO(data),
                                        len(data), content_type="application/octet-stream")
        return result.version_id

    def versions(self) -> list[tuple[str, str | None]]:
        return [(k.removeprefix(self.prefix), v)
                for k, v in list_all_versions(self.client, self.bucket, self.prefix)]

    def emptied(self) -> list[tuple[str, str | None]]:
        """The versions left once the inbox copies the watcher handed over are deleted.

        The watcher runs as the producer and cannot delete: it schedules each copy's deletion
        (due now) and wakes the retention worker. Here the due deletions are carried out in
        this process, as the retention role, as that worker would (its own end-to-end test is
        tests/producer/test_inbox.py)."""
        from workers.retention.purge import purge_due
        purge_due(self.settings.for_db_role("retention"), max_runtime_s=30)
        return self.versions()

    def clear(self) -> None:
        for key, version in list_all_versions(self.client, self.bucket, self.prefix):
            self.client.remove_object(self.bucket, key, version_id=version)

    def veil(self, *args: str, env: dict[str, str] | None = None,
             timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VEIL, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env, **(env or {})})

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([VEIL, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, **self.env, **(env or {})},
                                start_new_session=True)


@pytest.fixture()
def inbox(clean_ledger: Settings) -> Iterator[Inbox]:
    box = Inbox(clean_ledger)
    yield box
    box.clear()


def sources(settings: Settings) -> list[dict[str, Any]]:
    return rows(settings, "SELECT id, sha256, camera, captured_at, size_bytes, original_name,"
                " origin, policy_name FROM sources ORDER BY original_name")


def inbox_rows(settings: Settings) -> list[dict[str, Any]]:
    return rows(settings, "SELECT outcome, source_id, version_id, released_at FROM"
                " inbox_objects ORDER BY recorded_at")
