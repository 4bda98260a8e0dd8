"""Crypto-shredding of raw originals: a per-source AES-256-GCM data key, client side.

Raw originals are encrypted before they leave the producer, so this works on any S3 server. The
key lives in PostgreSQL in the ``keyring`` schema, apart from the ledger tables. Workers decrypt
in memory only.

Format (``VEIL2``): a header ``MAGIC2 || segment size (u32) || plaintext length (u64) || nonce
prefix (8 bytes)``, then the plaintext in segments of ``segment size`` bytes (the last one
shorter), each sealed on its own: ``ciphertext+tag`` under nonce ``prefix || index (u32)``, with
the source id, the segment's index, the plaintext length and the segment size as associated data.
So a reader can fetch and authenticate any byte range with S3 range reads (:class:`RawReader`:
a video chunk task reads its own part of a long video, not all of it), and a segment that was
altered, moved to another position, taken from another object or cut off fails authentication.
Objects written before this format (``VEIL1``: ``MAGIC || nonce || ciphertext+tag``, one
piece) stay readable; :class:`RawReader` reads them whole.

Deleting a raw original destroys its key first (:func:`destroy_key`), in the deleting
transaction: from that commit on, every copy of the object (versions, replicas, S3 backups) is
ciphertext without a key, even before the objects themselves are gone.

Hazard: PostgreSQL backups and WAL archives taken before the destruction still hold the key until
they expire; keep their retention shorter than the raw retention, or the shredding is only as
good as the backup policy (README, "Crypto-shredding").
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from minio import Minio

from infra.db import Conn
from infra.objectstore import get_bytes, get_range
from schemas.keys import sha256_hex

MAGIC = b"VEIL1"  # one-piece format (still read); refuses to "decrypt" a plain object
MAGIC2 = b"VEIL2"  # segmented format, written since range reads
_NONCE = 12
_TAG = 16
_HEADER = struct.Struct(">5sIQ8s")  # magic, segment size, plaintext length, nonce prefix
SEGMENT = 1024 * 1024  # plaintext bytes per sealed segment


class KeyDestroyedError(Exception):
    """The source's data key was destroyed (erased or purged): its original is unreadable."""


class RawIntegrityError(Exception):
    """The stored raw object does not decrypt or does not match its recorded sha256."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _aad(source_id: uuid.UUID | str) -> bytes:
    # Binds the ciphertext to its source: an object copied onto another source's key fails.
    return f"veil-raw:{uuid.UUID(str(source_id))}".encode()


def encrypt(key: bytes, plaintext: bytes, source_id: uuid.UUID | str,
            segment: int = SEGMENT) -> bytes:
    """The ``VEIL2`` object for ``plaintext``: header, then each segment sealed on its own."""
    return b"".join(Sealer(key, plaintext, source_id, segment).parts())


class Sealer:
    """The ``VEIL2`` object for ``plaintext``, made segment by segment as it is consumed.

    Uploading from :meth:`reader` never holds the whole ciphertext beside the plaintext (a 2-GB
    video needs 2 GB, not 4); :meth:`sha256` is a first pass over the same bytes (the nonce
    prefix is drawn once), for the object's checksum metadata that S3 takes before the body.
    """

    def __init__(self, key: bytes, plaintext: bytes | FilePlaintext, source_id: uuid.UUID | str,
                 segment: int = SEGMENT) -> None:
        plain = plaintext if isinstance(plaintext, FilePlaintext) else memoryview(plaintext)
        self._aead, self._plain, self._source = AESGCM(key), plain, source_id
        self._segment, self._prefix = segment, os.urandom(8)
        self.size = _Layout(segment, len(plaintext), self._prefix).object_size

    def parts(self) -> Iterator[bytes]:
        length = len(self._plain)
        yield _HEADER.pack(MAGIC2, self._segment, length, self._prefix)
        for index, start in enumerate(range(0, max(length, 1), self._segment)):
            yield self._aead.encrypt(self._prefix + index.to_bytes(4, "big"),
                                     self._plain[start:start + self._segment],
                                     _segment_aad(self._source, index, length, self._segment))

    def sha256(self) -> str:
        digest = hashlib.sha256()
        for part in self.parts():
            digest.update(part)
        return digest.hexdigest()

    def reader(self) -> io.RawIOBase:
        return _PartsReader(self.parts())


class FilePlaintext:
    """A plaintext in a local file, sliced segment by segment with ``os.pread``: a Sealer over
    it holds one segment at a time, so a spooled multi-gigabyte video is encrypted without
    being read into memory (issue 18). Only ``len`` and ``[start:stop]`` are supported."""

    def __init__(self, file: io.BufferedIOBase | io.RawIOBase | BinaryIO, length: int) -> None:
        self._fd, self._length = file.fileno(), length

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, span: slice) -> bytes:
        start, stop, _ = span.indices(self._length)
        return os.pread(self._fd, max(stop - start, 0), start)


class _PartsReader(io.RawIOBase):
    """A read-once file over a sequence of byte strings."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        super().__init__()
        self._parts, self._pending = parts, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view):
            if not len(self._pending):
                part = next(self._parts, None)
                if part is None:
                    break
                self._pending = memoryview(part)
            n = min(len(view) - done, len(self._pending))
            view[done:done + n] = self._pending[:n]
            self._pending = self._pending[n:]
            done += n
        return done


def decrypt(key: bytes, blob: bytes, source_id: uuid.UUID | str) -> bytes:
    """The whole plaintext of a stored raw object, either format."""
    if blob.startswith(MAGIC2) and len(blob) >= _HEADER.size:
        layout = _Layout.parse(blob[:_HEADER.size], source_id)
        if len(blob) != layout.object_size:
            raise RawIntegrityError(f"raw object of source {source_id} fails authentication: "
                                    f"{len(blob)} bytes where its header implies "
                                    f"{layout.object_size} (cut off or padded)")
        return b"".join(layout.open(key, i, blob[slice(*layout.sealed(i))], source_id)
                        for i in range(layout.segments))
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _NONCE + _TAG:
        raise RawIntegrityError(f"raw object of source {source_id} is not a Veil-encrypted "
                                "original")
    nonce = blob[len(MAGIC):len(MAGIC) + _NONCE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + _NONCE:], _aad(source_id))
    except InvalidTag as exc:
        raise RawIntegrityError(f"raw object of source {source_id} fails authentication: "
                                "tampered, or encrypted under another key") from exc


def _segment_aad(source_id: uuid.UUID | str, index: int, length: int, segment: int) -> bytes:
    return _aad(source_id) + struct.pack(">IQI", index, length, segment)


class _Layout:
    """Where each sealed segment of a ``VEIL2`` object lies, from its header."""

    def __init__(self, segment: int, length: int, prefix: bytes) -> None:
        self.segment, self.length, self.prefix = segment, length, prefix
        self.segments = max(1, -(-length // segment))
        self.object_size = _HEADER.size + length + self.segments * _TAG

    @classmethod
    def parse(cls, header: bytes, source_id: uuid.UUID | str) -> _Layout:
        magic, segment, length, prefix = _HEADER.unpack(header)
        if magic != MAGIC2 or segment <= 0:
            raise RawIntegrityError(f"raw object of source {source_id} has no valid header")
        return cls(segment, length, prefix)

    def sealed(self, index: int) -> tuple[int, int]:
        """Byte range [start, end) of segment ``index`` in the object."""
        start = _HEADER.size + index * (self.segment + _TAG)
        return start, start + min(self.segment, self.length - index * self.segment) + _TAG

    def open(self, key: bytes, index: int, sealed: bytes, source_id: uuid.UUID | str) -> bytes:
        try:
            return AESGCM(key).decrypt(self.prefix + index.to_bytes(4, "big"), sealed,
                                       _segment_aad(source_id, index, self.length, self.segment))
        except InvalidTag as exc:
            raise RawIntegrityError(
                f"raw object of source {source_id} fails authentication at segment {index}: "
                "tampered, moved, cut off, or encrypted under another key") from exc


@dataclass(frozen=True)
class RawObject:
    """Which sealed original to read: the source whose key decrypts it (and whose id is bound
    into every segment's AAD) and the exact object version in the raw bucket. These four always
    travel together, from the job or source row to the reader."""

    source_id: uuid.UUID | str
    bucket: str
    key: str
    version_id: str | None


class RawReader(io.RawIOBase):
    """A raw original as a seekable, read-only file, fetched and authenticated on demand.

    ``VEIL2`` objects are read with S3 range requests, a few segments per request (PyAV reads
    sequentially in small blocks), keeping the last ``cache_segments`` in memory; every segment
    is authenticated before a byte of it is returned. Unlike :func:`read_original` this cannot
    check the whole file's sha256 (that would mean reading it all): what it returns is exactly
    what was sealed under this source's key, at this position. A ``VEIL1`` object is fetched and
    decrypted whole on first use. ``fetched`` counts the bytes requested from S3.
    """

    def __init__(self, s3: Minio, data_key: bytes, raw: RawObject, *, max_bytes: int,
                 read_ahead: int = 4, cache_segments: int = 16) -> None:
        super().__init__()
        source_id, bucket, key, version_id = raw.source_id, raw.bucket, raw.key, raw.version_id
        self._s3, self._data_key, self._source = s3, data_key, source_id
        self._where = (bucket, key, version_id)
        self._read_ahead, self._cache_size = max(1, read_ahead), max(1, cache_segments)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._whole: bytes | None = None
        self._pos = 0
        self.fetched = 0
        head = self._get(0, _HEADER.size)
        if head.startswith(MAGIC2) and len(head) == _HEADER.size:
            self._layout: _Layout | None = _Layout.parse(head, source_id)
            self.size = self._layout.length
        else:  # the one-piece format: only whole
            blob = get_bytes(s3, bucket, key, version_id=version_id, max_bytes=max_bytes + 64)
            self.fetched += len(blob)
            self._layout, self._whole = None, decrypt(data_key, blob, source_id)
            self.size = len(self._whole)
        if self.size > max_bytes:
            raise RawIntegrityError(f"raw object of source {source_id} holds {self.size} "
                                    f"bytes, over the limit of {max_bytes}")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), max(0, self.size - self._pos))
        done = 0
        while done < wanted:
            chunk = self._piece(self._pos + done, wanted - done)
            view[done:done + len(chunk)] = chunk
            done += len(chunk)
        self._pos += done
        return done

    def _piece(self, pos: int, most: int) -> bytes:
        if self._whole is not None:
            return self._whole[pos:pos + most]
        assert self._layout is not None
        index, within = divmod(pos, self._layout.segment)
        plain = self._segment(index)
        return plain[within:within + most]

    def _segment(self, index: int) -> bytes:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        layout = self._layout
        assert layout is not None
        last = min(layout.segments, index + self._read_ahead)
        start, end = layout.sealed(index)[0], layout.sealed(last - 1)[1]
        sealed = self._get(start, end - start)
        if len(sealed) != end - start:
            raise RawIntegrityError(f"raw object of source {self._source} is cut off at "
                                    f"segment {index}")
        for i in range(index, last):
            a, b = layout.sealed(i)
            self._cache[i] = layout.open(self._data_key, i, sealed[a - start:b - start],
                                         self._source)
            self._cache.move_to_end(i)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return self._cache[index]

    def _get(self, offset: int, length: int) -> bytes:
        bucket, key, version_id = self._where
        data = get_range(self._s3, bucket, key, offset, length, version_id=version_id)
        self.fetched += len(data)
        return data


def store_key(conn: Conn, source_id: uuid.UUID | str, key: bytes) -> None:
    """Record the key; call in the transaction that records the source."""
    conn.execute("INSERT INTO keyring.data_keys (source_id, key) VALUES (%s, %s)",
                 (source_id, key))


def load_key(conn: Conn, source_id: uuid.UUID | str) -> bytes:
    row = conn.execute("SELECT key, destroyed_at FROM keyring.data_keys WHERE source_id = %s",
                       (source_id,)).fetchone()
    if row is None:
        raise KeyDestroyedError(f"source {source_id} has no data key on record")
    if row["key"] is None:
        raise KeyDestroyedError(f"the data key of source {source_id} was destroyed at "
                                f"{row['destroyed_at']:%Y-%m-%d %H:%M:%S %Z}; its original is "
                                "unreadable")
    return bytes(row["key"])


def destroy_key(conn: Conn, source_id: uuid.UUID | str, actor: str) -> bool:
    """Destroy the key (True if it existed and was live). Idempotent."""
    row = conn.execute(
        "UPDATE keyring.data_keys SET key = NULL, destroyed_at = now(), destroyed_by = %s"
        " WHERE source_id = %s AND key IS NOT NULL RETURNING source_id", (actor, source_id),
    ).fetchone()
    return row is not None


def read_original(s3: Minio, data_key: bytes, raw: RawObject, *, sha256: str,
                  max_bytes: int) -> bytes:
    """Fetch, decrypt and verify a raw original, in memory only (load the key with
    :func:`load_key` in the transaction that claims the job)."""
    blob = get_bytes(s3, raw.bucket, raw.key, version_id=raw.version_id, max_bytes=max_bytes + 64)
    plaintext = decrypt(data_key, blob, raw.source_id)
    if sha256_hex(plaintext) != sha256:
        raise RawIntegrityError(f"raw object of source {raw.source_id} does not match its recorded "
                                "sha256; refusing to process a tampered original")
    return plaintext
