"""Object-key builders and idempotency keys.

Keys are deterministic so that a task run twice writes the same object, and they carry ids and
hashes only: an original file name can itself be personal data and never appears in a key.
"""

from __future__ import annotations

import hashlib
import re
import uuid

_EXT = re.compile(r"^[a-z0-9]{1,8}$")
_NAMESPACE = uuid.UUID("5f0c7d1e-2b7e-4c55-9a51-7e11c0de0001")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ext(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    if not _EXT.match(ext):
        raise ValueError(f"bad extension for an object key: {ext!r}")
    return ext


def raw_key(sha256: str, ext: str) -> str:
    """`raw` key from the content hash: the same bytes always land on the same key."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ValueError("raw_key needs a lowercase hex sha256")
    return f"sha256/{sha256[:2]}/{sha256}.{_ext(ext)}"


def redacted_key(source_id: uuid.UUID | str, ext: str) -> str:
    return f"sources/{source_id}/redacted.{_ext(ext)}"


def chunk_key(source_id: uuid.UUID | str, chunk_index: int, ext: str = "mp4") -> str:
    return f"sources/{source_id}/chunks/{chunk_index:06d}.{_ext(ext)}"


def source_id_for(sha256: str) -> uuid.UUID:
    """The source id is derived from the content, so concurrent ingests of the same bytes agree."""
    return uuid.uuid5(_NAMESPACE, f"source:{sha256}")


def job_id_for(source_id: uuid.UUID | str, kind: str, chunk_index: int = 0) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"job:{source_id}:{kind}:{chunk_index}")
