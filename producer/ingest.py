"""Ingest: originals into `raw`, ledger rows in one transaction, tasks sent after commit.

For each input: (0) commit its upload intent, a deletion task for its raw key due after
``limits.orphan_grace_s``; (1) put the bytes into `raw` under a key derived from their sha256;
(2) in ONE PostgreSQL transaction write the source, its job, the raw deletion deadline (which
takes over the intent), an outbox row and an audit event; (3) after commit send the task and
mark the outbox row sent. A crash between (1) and (2) leaves an object whose intent the purge
deletes; a crash between (2) and (3) leaves an unsent outbox row that the relay sends later.
The same bytes twice make one source.

Inputs that are not images (zero bytes, garbage, unsupported formats) are ingested all the same
and fail in the worker with a readable reason (invariant 7): the batch goes on, the original is
kept until its deadline, and the ledger shows what happened to every file the user handed over.
"""

from __future__ import annotations

import posixpath
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import BinaryIO, Literal

from celery import Celery
from minio import Minio
from minio.error import S3Error

from infra import db, jobs, keyring, ledger, ledger_inbox, ledger_sources, outbox
from infra.db import Conn
from infra.objectstore import (
    StreamBody,
    client_for,
    explain_error,
    get_bytes,
    list_sizes,
    put_stream,
)
from infra.reconcile import record_upload_intent
from infra.settings import Settings
from producer.capture_time import MediaFacts, media_facts, video_facts
from producer.consent import ConsentError, require_consent
from producer.scanning import display_name, is_linked_folder, outside_link, walk
from producer.video_plan import VideoPlan, plan_video, record_video_jobs
from schemas import messages
from schemas.enums import AuditAction, JobKind, JobState, SourceKind
from schemas.keys import job_id_for, raw_key, sha256_hex, source_id_for
from schemas.media import extension_for, sniff
from schemas.policy import Policy

ACTOR = "producer"


class IngestError(Exception):
    """A problem with the request itself (missing path, unreadable bucket): nothing was ingested
    for that input."""


@dataclass
class InboxObject:
    """Where an inbox upload lies; ``version_id`` is the version read (set when it is read)."""

    bucket: str
    key: str
    version_id: str | None = None


@dataclass(frozen=True)
class InputItem:
    """One thing to ingest: its display name (kept in the ledger only) and how to read it."""

    name: str
    read: Callable[[], bytes]
    origin: str
    size: int = 0  # bytes, as listed before reading (0: unknown); bounds a batch's memory
    refusal: str | None = None  # why it is not read at all (a symbolic link out of its folder)
    # A large input: a local file holding its bytes (spooled from S3) and their sha256, used
    # instead of ``read`` so that a video is never held in memory whole (issue 18).
    spool: Callable[[], tuple[BinaryIO, str]] | None = None
    inbox: InboxObject | None = None  # an upload in the inbox, deleted once ingested


@dataclass
class IngestResult:
    name: str
    source_id: uuid.UUID | None = None
    job_id: uuid.UUID | None = None
    duplicate: bool = False
    state: str = JobState.QUEUED
    error: str | None = None
    sha256: str | None = None
    raw_version_id: str | None = None


@dataclass
class IngestOptions:
    policy: Policy
    raw_ttl_s: int | None = None
    camera: str | None = None
    captured_at: datetime | None = None  # used when the file's metadata has none
    camera_tz: tzinfo | None = None  # the zone of EXIF times that carry no offset (UTC if None)
    capture_from: Literal["metadata", "upload"] = "metadata"  # "upload": captured_at wins
    consent_ref: str | None = None  # required by a consent-based policy (producer.consent)


def collect_inputs(targets: Sequence[str], settings: Settings) -> list[InputItem]:
    """Expand files, folders (recursively, sorted) and ``s3://bucket/prefix`` into items."""
    items: list[InputItem] = []
    for target in targets:
        if target.startswith("s3://"):
            items.extend(_s3_inputs(target, settings))
            continue
        path = Path(target)
        if path.is_dir():
            items.extend(_folder_inputs(path))
        elif path.is_file():
            items.append(_file_input(path))
        else:
            raise IngestError(f"no such file or folder: {target}")
    return items


def _folder_inputs(folder: Path) -> Iterator[InputItem]:
    """The files under ``folder`` (hidden ones aside); a symbolic link out of it is an item
    refused with its reason, never read (``producer.scanning``)."""
    for path in walk(folder):
        refusal = outside_link(path, folder)
        if refusal:
            yield InputItem(name=display_name(path.name), read=bytes, origin="upload",
                            refusal=refusal)
        elif not is_linked_folder(path) and path.is_file() and not path.name.startswith("."):
            yield _file_input(path)


def _file_input(path: Path) -> InputItem:
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # reading it will say what is wrong
    return InputItem(name=display_name(path.name), read=path.read_bytes, origin="upload",
                     size=size)


def _s3_inputs(url: str, settings: Settings) -> Iterator[InputItem]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise IngestError(f"bad S3 address {url!r}: use s3://bucket/prefix")
    if bucket != settings.s3.bucket_inbox:
        # raw holds ciphertext, work and redacted Veil's own outputs: none of them is an input.
        raise IngestError(f"{url}: only the inbox bucket ({settings.s3.bucket_inbox}) can be "
                          "ingested from S3")
    client = client_for("producer", settings)
    limit = settings.limits.max_file_bytes
    try:
        listed = sorted(list_sizes(client, bucket, prefix))
    except Exception as exc:
        # Only the inbox gets here, and it is configured, not known to exist: what this
        # identity can see decides between a missing bucket and a missing grant.
        raise IngestError(f"cannot list {url}: {explain_error(client, exc, bucket)}") from exc
    if prefix and not listed:
        raise IngestError(f"no object at {url}: nothing in bucket {bucket!r} starts with "
                          f"{prefix!r} (missing object)")
    for key, size in listed:
        inbox = InboxObject(bucket, key)
        yield InputItem(
            name=display_name(posixpath.basename(key)),
            read=lambda o=inbox: _read_inbox(client, o, limit),  # type: ignore[misc]
            origin="s3-inbox",
            size=size,
            inbox=inbox,
        )


def _read_inbox(client: Minio, inbox: InboxObject, limit: int) -> bytes:
    """The current version of an inbox upload, pinned: the version recorded is the one read;
    an S3 refusal says which kind it was (gone, denied)."""
    try:
        stat = client.stat_object(inbox.bucket, inbox.key)
        inbox.version_id = stat.version_id
        return get_bytes(client, inbox.bucket, inbox.key, version_id=stat.version_id,
                         max_bytes=limit)
    except S3Error as exc:
        raise IngestError(explain_error(client, exc, inbox.bucket, inbox.key)) from exc


BATCH = 32
BATCH_BYTES = 256 * 1024 * 1024  # a batch is read into memory at once: videos go a few at a time
UPLOAD_THREADS = 8


def batches(items: Sequence[InputItem], count: int = BATCH,
            budget: int = BATCH_BYTES) -> Iterator[list[InputItem]]:
    """Consecutive batches of at most ``count`` items and, going by their listed sizes, at most
    ``budget`` bytes (an item larger than the budget goes alone): 32 photos share a batch,
    a folder of 2-GB videos is read one video at a time instead of 32 at once."""
    batch: list[InputItem] = []
    held = 0
    for item in items:
        if batch and (len(batch) >= count or held + item.size > budget):
            yield batch
            batch, held = [], 0
        batch.append(item)
        held += item.size
    if batch:
        yield batch


@dataclass
class _Prepared:
    item: InputItem
    result: IngestResult
    data: bytes = b""  # the whole input; for a spooled video only its first bytes
    spool: BinaryIO | None = None  # a spooled video's bytes (see InputItem.spool)
    size: int = 0
    fmt: str | None = None
    kind: str = str(SourceKind.IMAGE)
    data_key: bytes = b""  # the source's AES-GCM key, made when its original is uploaded


def ingest(
    items: Sequence[InputItem],
    options: IngestOptions,
    settings: Settings,
    app: Celery,
    progress: Callable[[int], None] | None = None,
) -> list[IngestResult]:
    """Ingest in batches: read and hash in threads, skip bytes already known, upload new
    originals in threads, then one transaction per source on one connection, then send."""
    client = client_for("producer", settings)
    results: list[IngestResult] = []
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool, db.connect(settings, autocommit=True) as conn:
        _check_consent(conn, options)
        for group in batches(items):
            batch = list(pool.map(lambda i: _read(i, settings), group))
            fresh = _unknown(conn, batch)
            _record_intents(conn, fresh, settings)
            list(pool.map(lambda p: _upload(p, settings, client), fresh))
            if settings.test_ingest_pause_s:  # fault injection: a kill after the upload
                time.sleep(settings.test_ingest_pause_s)
            rows = []
            for prepared in batch:
                if prepared.result.state != "rejected":
                    rows.extend(_record(conn, prepared, options, settings))
                if prepared.spool is not None:
                    prepared.spool.close()
                results.append(prepared.result)
            outbox.send_rows(app, settings, rows)
            if inbox_cleanup_due(group):
                app.send_task(messages.PURGE)  # the retention worker deletes the inbox copies
            if progress:
                progress(len(batch))
    return results


def _ingest_one(
    item: InputItem, options: IngestOptions, settings: Settings, client: Minio
) -> tuple[IngestResult, list[tuple[int, str, str]] | None]:
    """One input through every ingest step except sending (used by tests and the relay path);
    the outbox rows it wrote, or None when it queued nothing."""
    prepared = _read(item, settings)
    if prepared.result.state == "rejected":
        return prepared.result, None
    with db.connect(settings, autocommit=True) as conn:
        _check_consent(conn, options)
        if _unknown(conn, [prepared]):
            _record_intents(conn, [prepared], settings)
            _upload(prepared, settings, client)
        return prepared.result, _record(conn, prepared, options, settings) or None


def _check_consent(conn: Conn, options: IngestOptions, lock: bool = False) -> None:
    """Before anything is uploaded: a consent-based policy needs a live ``--consent``."""
    try:
        require_consent(conn, options.consent_ref, options.policy, lock=lock)
    except ConsentError as exc:
        raise IngestError(str(exc)) from exc


def _read(item: InputItem, settings: Settings) -> _Prepared:
    prepared = _Prepared(item=item, result=IngestResult(name=item.name))
    result = prepared.result
    if item.refusal:
        result.state, result.error = "rejected", f"{item.name}: {item.refusal}"
        return prepared
    digest = None
    try:
        if item.spool is not None:
            data, digest = _read_spooled(prepared, item.spool)
        else:
            data = item.read()
    except Exception as exc:  # unreadable file: reported, the batch goes on
        result.state, result.error = "rejected", f"cannot read {item.name}: {exc}"
        return prepared
    prepared.size = prepared.size or len(data)
    if prepared.size > settings.limits.max_file_bytes:
        result.state = "rejected"
        result.error = (f"{item.name} is {prepared.size} bytes, above the limit of "
                        f"{settings.limits.max_file_bytes}")
        return prepared
    sniffed = sniff(data)
    prepared.data, prepared.fmt = data, sniffed[1] if sniffed else None
    if sniffed:
        prepared.kind = sniffed[0]
    result.sha256 = digest or sha256_hex(data)
    result.source_id = source_id_for(result.sha256)
    result.job_id = job_id_for(result.source_id, JobKind.CHUNK if prepared.kind ==
                               SourceKind.VIDEO else JobKind.IMAGE)
    return prepared


def _read_spooled(prepared: _Prepared,
                  spool: Callable[[], tuple[BinaryIO, str]]) -> tuple[bytes, str]:
    """A spooled input: a video stays in its file (only its head is returned, for sniffing);
    anything else is read from the file into memory, as a small input would be."""
    file, digest = spool()
    prepared.size = file.seek(0, 2)
    file.seek(0)
    head = file.read(64 * 1024)
    if sniff(head) is not None and sniff(head)[0] == SourceKind.VIDEO:  # type: ignore[index]
        prepared.spool = file
        return head, digest
    file.seek(0)
    with file:
        return file.read(), digest


def _unknown(conn: Conn, batch: Sequence[_Prepared]) -> list[_Prepared]:
    """The prepared inputs whose bytes no source holds yet (first of each within the batch)."""
    known = ledger_sources.known_digests(conn, [p.result.sha256 for p in batch
                                                if p.result.sha256])
    fresh: dict[str, _Prepared] = {}
    for p in batch:
        digest = p.result.sha256
        if digest and digest not in known and digest not in fresh:
            fresh[digest] = p
    return list(fresh.values())


def _raw_location(prepared: _Prepared, settings: Settings) -> tuple[str, str]:
    assert prepared.result.sha256
    return settings.s3.bucket_raw, raw_key(prepared.result.sha256, extension_for(prepared.fmt))


def _record_intents(conn: Conn, fresh: Sequence[_Prepared], settings: Settings) -> None:
    """Before any byte is uploaded, each original gets a deletion task (its intent), committed:
    an ingest killed between the upload and its record leaves no object without a deadline."""
    with conn.transaction():
        for prepared in fresh:
            bucket, key = _raw_location(prepared, settings)
            record_upload_intent(conn, bucket, key, settings)


def _upload(prepared: _Prepared, settings: Settings, client: Minio) -> None:
    """Encrypt the original under a fresh data key and put it into `raw`."""
    bucket, key = _raw_location(prepared, settings)
    assert prepared.result.source_id
    prepared.data_key = keyring.new_data_key()
    plaintext = (keyring.FilePlaintext(prepared.spool, prepared.size)
                 if prepared.spool is not None else prepared.data)
    sealer = keyring.Sealer(prepared.data_key, plaintext, prepared.result.source_id)
    body = StreamBody(sealer.reader(), sealer.size, sealer.sha256(),
                      parallel_parts=1 if prepared.spool is not None else 3)
    stored = put_stream(client, bucket, key, body)
    prepared.result.raw_version_id = stored.version_id


def _record(
    conn: Conn, prepared: _Prepared, options: IngestOptions, settings: Settings
) -> list[tuple[int, str, str]]:
    """ONE transaction: source, job(s), raw deletion deadline, outbox row(s), audit event.

    A video gets one job per chunk plus its assemble job (``producer.video_plan``); the rows
    returned are the outbox rows to send after commit (none for a duplicate).
    """
    result, item = prepared.result, prepared.item
    source_id, job_id, digest = result.source_id, result.job_id, result.sha256
    bucket, key = _raw_location(prepared, settings)
    ttl = options.raw_ttl_s or options.policy.raw_retention_s
    facts, video = _describe(prepared, options, settings)
    with conn.transaction():
        if options.consent_ref is not None:  # withdrawn since the batch began: refused
            try:
                _check_consent(conn, options, lock=True)
            except IngestError as exc:
                result.state, result.error = "rejected", str(exc)
                return []
        if not ledger_sources.insert_source(conn, _new_source(prepared, options, facts,
                                                              (bucket, key))):
            _report_duplicate(conn, result)
            _schedule_inbox_deletion(conn, item, source_id)
            return []
        if not prepared.data_key:  # known bytes whose source vanished between check and insert
            raise IngestError(f"{item.name}: its original was not uploaded; ingest it again")
        assert source_id is not None and job_id is not None  # set by _read for every input here
        keyring.store_key(conn, source_id, prepared.data_key)
        if video is not None:
            rows = record_video_jobs(conn, source_id, video, ACTOR)
            if video.error:
                result.state, result.error = JobState.FAILED, video.error
        else:
            jobs.create_image_job(conn, job_id, source_id)
        ledger.schedule_deletion(
            conn, source_id, bucket, key, datetime.now(UTC) + timedelta(seconds=ttl),
            reason=f"policy {options.policy.name} v{options.policy.version}: raw retention",
        )
        _schedule_inbox_deletion(conn, item, source_id)
        if video is None:
            rows = ledger.add_outbox_rows(conn, [(str(job_id), str(JobKind.IMAGE))])
        ledger.audit(conn, ACTOR, AuditAction.INGEST, source_id=source_id, job_id=job_id,
                     bucket=bucket, key=key,
                     detail={"sha256": digest, "size": prepared.size,
                             "origin": item.origin, "policy": options.policy.name,
                             "raw_ttl_s": ttl, "consent": options.consent_ref})
    return rows


def _new_source(prepared: _Prepared, options: IngestOptions, facts: MediaFacts,
                raw: tuple[str, str]) -> ledger_sources.NewSource:
    """The source row, with what the policy says about its purpose and legal basis and where
    an inbox upload came from."""
    result, item, policy = prepared.result, prepared.item, options.policy
    inbox = item.inbox
    assert result.source_id is not None and result.sha256 is not None  # set by _read
    return ledger_sources.NewSource(
        id=result.source_id, sha256=result.sha256, kind=prepared.kind,
        media_format=prepared.fmt or "unknown", original_name=item.name,
        size_bytes=prepared.size, raw_bucket=raw[0], raw_key=raw[1],
        raw_version_id=result.raw_version_id, policy_name=policy.name,
        policy_version=policy.version, policy=policy.model_dump(mode="json"),
        camera=options.camera, captured_at=_captured_at(facts, options), origin=item.origin,
        purpose=policy.purpose, legal_basis=policy.legal_basis_text,
        consent_ref=options.consent_ref, duration_s=facts.duration_s,
        inbox_bucket=inbox.bucket if inbox else None, inbox_key=inbox.key if inbox else None,
        inbox_version_id=inbox.version_id if inbox else None)


def ingest_inbox_object(item: InputItem, inbox: ledger_inbox.InboxRef, options: IngestOptions,
                        settings: Settings, app: Celery) -> IngestResult:
    """Ingest one inbox object version: raw copy, then ONE transaction with its source (or the
    duplicate it is) and its ``inbox_objects`` row, then send. A version already recorded
    (at-least-once delivery) commits nothing new and queues nothing; its result says so."""
    prepared = _read(item, settings)
    result = prepared.result
    try:
        with db.connect(settings, autocommit=True) as conn:
            if result.state == "rejected":  # kept in the inbox; recorded if it never fits
                if inbox.size <= settings.limits.max_file_bytes:
                    return result  # unreadable now (S3 trouble?): the next sweep tries again
                ledger_inbox.record_inbox_object(conn, inbox, source_id=None, outcome="rejected",
                                                 size_bytes=inbox.size, detail=result.error)
                return result
            try:
                _check_consent(conn, options)
            except IngestError as exc:  # a consent-based camera policy: kept, reported
                result.state, result.error = "rejected", str(exc)
                return result
            if fresh := _unknown(conn, [prepared]):
                _record_intents(conn, fresh, settings)
                _upload(prepared, settings, client_for("producer", settings))
            with conn.transaction():
                rows = _record(conn, prepared, options, settings)
                if result.state == "rejected":
                    return result
                recorded = ledger_inbox.record_inbox_object(
                    conn, inbox, source_id=result.source_id, size_bytes=prepared.size,
                    outcome="duplicate" if result.duplicate else "ingested")
                if not recorded:
                    raise _AlreadyRecorded
    except _AlreadyRecorded:
        result.duplicate, result.state = True, "already ingested"
        return result
    finally:
        if prepared.spool is not None:
            prepared.spool.close()
    outbox.send_rows(app, settings, rows)
    return result


class _AlreadyRecorded(Exception):
    """Rolls back a transaction for an inbox version another delivery recorded first."""

def _schedule_inbox_deletion(conn: Conn, item: InputItem, source_id: uuid.UUID | None) -> None:
    """In this transaction, which commits the raw copy: see ledger.schedule_inbox_deletion."""
    if item.inbox is not None:
        ledger.schedule_inbox_deletion(conn, item.inbox.bucket, item.inbox.key, source_id)


def inbox_cleanup_due(items: Sequence[InputItem]) -> bool:
    """True when an ingest left inbox uploads to delete (the caller then wakes the purge)."""
    return any(i.inbox is not None for i in items)


def _describe(prepared: _Prepared, options: IngestOptions,
              settings: Settings) -> tuple[MediaFacts, VideoPlan | None]:
    """Capture facts (the file's own capture time wins over --captured-at) and, for a video,
    its probe and chunk plan: one pass over the bytes, and none for bytes already known (they
    were not uploaded, so their insert is a duplicate)."""
    if not prepared.data_key:
        return MediaFacts(), None
    if prepared.kind != SourceKind.VIDEO:
        return media_facts(prepared.data, prepared.kind, options.camera_tz or UTC), None
    video = plan_video(prepared.spool or prepared.data, options.policy, settings)
    facts = video_facts(video.info.creation_time, video.info.duration_s) \
        if video.info is not None else MediaFacts()
    return facts, video


def _captured_at(facts: MediaFacts, options: IngestOptions) -> datetime | None:
    if options.capture_from == "upload":
        return options.captured_at or facts.captured_at
    return facts.captured_at or options.captured_at


def _report_duplicate(conn: Conn, result: IngestResult) -> None:
    """The same bytes are already a source: report its state (or its erasure) instead."""
    result.duplicate = True
    assert result.source_id is not None  # set by _read for every input recorded
    erased = ledger_sources.erased_at(conn, result.source_id)
    if erased:
        result.state = "erased"
        result.error = (f"source {result.source_id} holding these bytes was erased at "
                        f"{erased:%Y-%m-%d %H:%M:%S %Z}; not ingested again")
        return
    result.state, result.error = ledger_sources.source_outcomes(conn, [result.source_id]).get(
        result.source_id, ("unknown", None))


def wait_for(source_ids: Sequence[uuid.UUID], settings: Settings, timeout_s: float,
             tick: Callable[[int], None] | None = None) -> dict[uuid.UUID, tuple[str, str | None]]:
    """Poll the ledger until every source's outcome is decided (or the timeout passes): its
    image job, or its video's assemble job (which a failed chunk fails at once)."""
    deadline = time.monotonic() + timeout_s
    done_before = 0
    while True:
        with db.connect(settings) as conn:
            states = ledger_sources.source_outcomes(conn, source_ids)
        finished = sum(1 for s, _ in states.values() if JobState(s).finished)
        if tick and finished > done_before:
            tick(finished - done_before)
            done_before = finished
        if finished == len(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)
