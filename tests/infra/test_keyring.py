"""Crypto-shredding of raw originals: encrypted client side, unreadable once the key is gone."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest

from infra import db, keyring
from infra.objectstore import client_for, get_bytes, list_all_versions
from infra.policies import get_policy
from infra.settings import Settings
from producer.ingest import IngestOptions, _file_input, _ingest_one
from tests.conftest import face_image, jpeg_bytes

SOURCE = uuid.UUID("00000000-0000-4000-8000-000000000001")


def test_ciphertext_is_bound_to_its_key_and_source() -> None:
    key = keyring.new_data_key()
    blob = keyring.encrypt(key, b"original bytes", SOURCE)
    assert b"original bytes" not in blob
    assert keyring.decrypt(key, blob, SOURCE) == b"original bytes"
    with pytest.raises(keyring.RawIntegrityError, match="fails authentication"):
        keyring.decrypt(keyring.new_data_key(), blob, SOURCE)
    with pytest.raises(keyring.RawIntegrityError, match="fails authentication"):
        keyring.decrypt(key, blob, uuid.uuid4())  # copied onto another source
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(keyring.RawIntegrityError, match="fails authentication"):
        keyring.decrypt(key, tampered, SOURCE)
    with pytest.raises(keyring.RawIntegrityError, match="not a Veil-encrypted"):
        keyring.decrypt(key, b"\xff\xd8\xff plain jpeg", SOURCE)


def test_stored_raw_is_ciphertext_and_a_destroyed_key_makes_it_unreadable(
        clean_ledger: Settings, tmp_path: Path, unique_seed: int) -> None:
    from workers import runtime
    from workers.image_job import process_image_job
    from workers.reliability import is_permanent

    # given an ingested image
    original = jpeg_bytes(face_image(unique_seed))
    path = tmp_path / "person.jpg"
    path.write_bytes(original)
    result, _ = _ingest_one(_file_input(path), IngestOptions(get_policy(None, clean_ledger)),
                            clean_ledger, client_for("producer", clean_ledger))
    with psycopg.connect(clean_ledger.db.url) as conn:
        bucket, key, version = conn.execute(
            "SELECT raw_bucket, raw_key, raw_version_id FROM sources WHERE id = %s",
            (result.source_id,)).fetchone()  # type: ignore[misc]
    admin = client_for("admin", clean_ledger)
    # then what S3 holds is not the original, and no version of it is
    assert len(list_all_versions(admin, bucket, key)) == 1
    stored = get_bytes(admin, bucket, key, version_id=version)
    assert stored != original and not stored.startswith(b"\xff\xd8")
    assert original[100:164] not in stored
    with db.transaction(clean_ledger) as conn:
        data_key = keyring.load_key(conn, result.source_id)
    assert keyring.decrypt(data_key, stored, result.source_id) == original

    # when the key is destroyed (as purge and erase do before deleting the object)
    with db.transaction(clean_ledger) as conn:
        assert keyring.destroy_key(conn, result.source_id, "test") is True
        assert keyring.destroy_key(conn, result.source_id, "test") is False  # idempotent
    # then the object still there is unreadable: no key, and the job fails permanently
    with db.transaction(clean_ledger) as conn, pytest.raises(keyring.KeyDestroyedError,
                                                             match="destroyed"):
        keyring.load_key(conn, result.source_id)
    with psycopg.connect(clean_ledger.db.url) as conn:
        row = conn.execute("SELECT key, destroyed_by FROM keyring.data_keys WHERE source_id = %s",
                           (result.source_id,)).fetchone()
    assert row == (None, "test")
    with pytest.raises(keyring.KeyDestroyedError) as failure:
        process_image_job(result.job_id, clean_ledger, runtime.detector(), "test-worker")
    assert is_permanent(failure.value)
