"""Crypto-shredding of raw originals: a per-source AES-256-GCM data key, client side.

Raw originals are encrypted before they leave the producer, so this works on any S3 server, and
the stored object is ``MAGIC || nonce || ciphertext+tag``. The key lives in PostgreSQL in the
``keyring`` schema, apart from the ledger tables. Workers decrypt in memory only.

Deleting a raw original destroys its key first (:func:`destroy_key`), in the deleting
transaction: from that commit on, every copy of the object (versions, replicas, S3 backups) is
ciphertext without a key, even before the objects themselves are gone.

Hazard: PostgreSQL backups and WAL archives taken before the destruction still hold the key until
they expire; keep their retention shorter than the raw retention, or the shredding is only as
good as the backup policy (README, "Crypto-shredding").
"""

from __future__ import annotations

import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from minio import Minio

from infra.db import Conn
from infra.objectstore import get_bytes
from schemas.keys import sha256_hex

MAGIC = b"VEIL1"  # format marker: refuses to "decrypt" an object that was never encrypted
_NONCE = 12


class KeyDestroyedError(Exception):
    """The source's data key was destroyed (erased or purged): its original is unreadable."""


class RawIntegrityError(Exception):
    """The stored raw object does not decrypt or does not match its recorded sha256."""


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _aad(source_id: uuid.UUID | str) -> bytes:
    # Binds the ciphertext to its source: an object copied onto another source's key fails.
    return f"veil-raw:{uuid.UUID(str(source_id))}".encode()


def encrypt(key: bytes, plaintext: bytes, source_id: uuid.UUID | str) -> bytes:
    nonce = os.urandom(_NONCE)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, _aad(source_id))


def decrypt(key: bytes, blob: bytes, source_id: uuid.UUID | str) -> bytes:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + _NONCE + 16:
        raise RawIntegrityError(f"raw object of source {source_id} is not a Veil-encrypted "
                                "original")
    nonce = blob[len(MAGIC):len(MAGIC) + _NONCE]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + _NONCE:], _aad(source_id))
    except InvalidTag as exc:
        raise RawIntegrityError(f"raw object of source {source_id} fails authentication: "
                                "tampered, or encrypted under another key") from exc


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


def read_original(s3: Minio, data_key: bytes, *, source_id: uuid.UUID | str, bucket: str,
                  key: str, version_id: str | None, sha256: str, max_bytes: int) -> bytes:
    """Fetch, decrypt and verify a raw original, in memory only (load the key with
    :func:`load_key` in the transaction that claims the job)."""
    blob = get_bytes(s3, bucket, key, version_id=version_id, max_bytes=max_bytes + 64)
    plaintext = decrypt(data_key, blob, source_id)
    if sha256_hex(plaintext) != sha256:
        raise RawIntegrityError(f"raw object of source {source_id} does not match its recorded "
                                "sha256; refusing to process a tampered original")
    return plaintext
