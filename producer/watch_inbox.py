"""One inbox object version through `veil watch`: camera, ingest, then the inbox copy released.

Exactly once per version: the ledger's ``inbox_objects`` row (written with the source, in one
transaction) is looked up first, so an object listed again or an event delivered twice is only
released, never ingested twice. Large objects are spooled to a local temporary file while their
sha256 is computed (1 MiB at a time), then encrypted from that file segment by segment: a
multi-gigabyte video is never in memory whole (it needs its size in free disk instead).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Literal

from celery import Celery
from minio import Minio

from infra import db, ledger, ledger_inbox
from infra.objectstore import get_bytes, transient_errors
from infra.settings import Settings
from producer.cameras import CameraBook, CameraRefused
from producer.ingest import InboxObject as IngestInbox
from producer.ingest import IngestOptions, IngestResult, InputItem, ingest_inbox_object

log = logging.getLogger(__name__)
ACTOR = "watcher"
SPOOL_CHUNK = 1024 * 1024

Outcome = Literal["ingested", "duplicate", "rejected", "refused", "released", "kept"]


@dataclass(frozen=True)
class InboxObject:
    bucket: str
    key: str
    version_id: str | None
    size: int
    uploaded_at: datetime | None

    @property
    def key_sha256(self) -> str:
        return hashlib.sha256(self.key.encode()).hexdigest()


@dataclass
class Handled:
    obj: InboxObject
    outcome: Outcome
    result: IngestResult | None = None
    reason: str | None = None


def list_inbox(client: Minio, bucket: str, prefix: str = "",
               start_after: str = "") -> Iterator[InboxObject]:
    """Every object version under ``prefix`` after key ``start_after``, in key order (delete
    markers and folders skipped: they hold no upload)."""
    with transient_errors():
        for obj in client.list_objects(bucket, prefix=prefix or None, recursive=True,
                                       include_version=True, start_after=start_after or None):
            if obj.object_name is None or obj.is_dir or obj.is_delete_marker:
                continue
            if start_after and obj.object_name <= start_after:
                continue
            version = obj.version_id if obj.version_id not in (None, "null") else None
            yield InboxObject(bucket, obj.object_name, version, int(obj.size or 0),
                              obj.last_modified)


def handle_object(obj: InboxObject, settings: Settings, app: Celery, book: CameraBook,
                  client: Minio) -> Handled:
    """Ingest one version unless the ledger already has it; release the inbox copy after."""
    with db.connect(settings) as conn:
        known = ledger_inbox.inbox_outcome(conn, obj.bucket, obj.key_sha256, obj.version_id)
    if known is not None:
        if known["outcome"] == "rejected":
            return Handled(obj, "kept", reason=known["detail"])
        inbox_copy_done(obj, known["source_id"], settings)
        return Handled(obj, "released")
    try:
        camera = book.for_key(obj.key, settings.watch.prefix)
    except CameraRefused as exc:
        return Handled(obj, "refused", reason=str(exc))
    options = IngestOptions(policy=camera.policy, camera=camera.name,
                            captured_at=obj.uploaded_at, camera_tz=camera.timezone,
                            capture_from=camera.capture_time)
    ref = ledger_inbox.InboxRef(obj.bucket, obj.key_sha256, obj.version_id, obj.size,
                                obj.uploaded_at)
    result = ingest_inbox_object(_input(obj, settings, client), ref, options, settings, app)
    if result.state == "rejected":
        return Handled(obj, "rejected", result, result.error)
    inbox_copy_done(obj, result.source_id, settings)
    return Handled(obj, "duplicate" if result.duplicate else "ingested", result)


def _input(obj: InboxObject, settings: Settings, client: Minio) -> InputItem:
    """The version as an ingest input. ``inbox`` makes the ingest record the upload's bucket,
    key and version on the source (erasure finds the copy) and schedule its deletion in the
    transaction that commits the raw copy."""
    name = posixpath.basename(obj.key)
    limit = settings.limits.max_file_bytes
    where = IngestInbox(obj.bucket, obj.key, obj.version_id)
    if obj.size > settings.watch.spool_above_bytes:
        return InputItem(name=name, read=bytes, origin="s3-inbox", size=obj.size, inbox=where,
                         spool=lambda: spool_object(client, obj, limit))
    return InputItem(name=name, origin="s3-inbox", size=obj.size, inbox=where,
                     read=lambda: get_bytes(client, obj.bucket, obj.key, obj.version_id, limit))


def spool_object(client: Minio, obj: InboxObject, max_bytes: int) -> tuple[BinaryIO, str]:
    """The object's bytes in an anonymous temporary file, and their sha256, read 1 MiB at a
    time; refuses (before reading) an object above ``max_bytes``."""
    if obj.size > max_bytes:
        raise ValueError(f"{obj.size} bytes, above the limit of {max_bytes}")
    digest = hashlib.sha256()
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - handed to the caller, who closes it
    try:
        with transient_errors():
            response = client.get_object(obj.bucket, obj.key, version_id=obj.version_id)
            try:
                for chunk in response.stream(SPOOL_CHUNK):
                    digest.update(chunk)
                    spool.write(chunk)
            finally:
                response.close()
                response.release_conn()
    except BaseException:
        spool.close()
        raise
    spool.flush()
    return spool, digest.hexdigest()  # type: ignore[return-value]


def inbox_copy_done(obj: InboxObject, source_id: uuid.UUID | None, settings: Settings) -> None:
    """The inbox copy is done with: its raw copy and ledger rows are committed.

    Handed to the inbox lifecycle, as `veil ingest s3://` does: a deletion task for the key,
    due now, and the retention worker (the only process with delete rights; the watcher runs
    with the producer's) deletes every version with a receipt and an audit event. The watcher
    wakes the purge once per sweep or event batch (``Watcher.wake_retention``). Hazard,
    documented in docs/ingestion.md: an upload under the same key made between this and the
    purge is deleted with it (cameras write unique keys).
    """
    with db.connect(settings) as conn, conn.transaction():
        ledger.schedule_inbox_deletion(conn, obj.bucket, obj.key, source_id)
        ledger_inbox.mark_inbox_released(conn, obj.bucket, obj.key_sha256, obj.version_id)
