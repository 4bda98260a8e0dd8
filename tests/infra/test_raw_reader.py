"""Segmented raw originals: a chunk task reads its own part of a video through S3 range
requests, and every segment it gets is authenticated (real SeaweedFS)."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from minio import Minio

from infra import keyring
from infra.objectstore import (
    SHA256_METADATA,
    StreamBody,
    client_for,
    delete_all_versions,
    get_bytes,
    put_bytes,
    put_stream,
)
from infra.settings import Settings
from infra.video_probe import probe_video
from producer.chunk_plan import plan_chunks
from tests.videos import VideoSpec, make_video
from workers.video.decode import decode_chunk

SOURCE = uuid.UUID("00000000-0000-4000-8000-0000000000a1")
SEGMENT = 16 * 1024


@pytest.fixture()
def raw_objects(services: Settings) -> Iterator[tuple[Minio, list[str]]]:
    """An S3 client and a list to name test objects in; every version is deleted after."""
    client, keys = client_for("admin", services), []
    yield client, keys
    for key in keys:
        delete_all_versions(client, services.s3.bucket_raw, key)


def _reader(client: Minio, settings: Settings, data_key: bytes, key: str,
            version: str | None) -> keyring.RawReader:
    return keyring.RawReader(client, data_key,
                             keyring.RawObject(SOURCE, settings.s3.bucket_raw, key, version),
                             max_bytes=settings.limits.max_file_bytes,
                             read_ahead=2, cache_segments=4)


def _store(client: Minio, settings: Settings, keys: list[str], blob: bytes) -> tuple[str, str]:
    key = f"test-raw-reader/{uuid.uuid4()}"
    keys.append(key)
    stored = put_bytes(client, settings.s3.bucket_raw, key, blob)
    assert stored.version_id
    return key, stored.version_id


def test_a_chunk_decodes_from_its_own_part_of_the_original(
        services: Settings, raw_objects: tuple[Minio, list[str]]) -> None:
    # given a 40-s video (1 MB) stored in sealed segments, planned in 20 chunks of 2 s
    client, keys = raw_objects
    video = make_video(VideoSpec(frames=1000, width=320, height=240, gop=25, bframes=0))
    data_key = keyring.new_data_key()
    blob = keyring.encrypt(data_key, video, SOURCE, segment=SEGMENT)
    key, version = _store(client, services, keys, blob)
    info, packets = probe_video(video, services.limits.max_image_pixels)
    plans = plan_chunks(packets, info.tb, 2.0)
    assert len(plans) == 20 and len(video) > 50 * SEGMENT
    # when a chunk in the middle is decoded through the reader, and from the whole file
    reader = _reader(client, services, data_key, key, version)
    streamed = list(decode_chunk(reader, info, plans[10], warmup=16, lookahead=3))
    whole = list(decode_chunk(video, info, plans[10], warmup=16, lookahead=3))
    # then it yields the same frames, having fetched the container's index and its own part
    # (with the keyframe before its warm-up), not the file: measured 20 % of it
    assert [(f.pts, f.index, f.warmup, f.lookahead) for f in streamed] == \
        [(f.pts, f.index, f.warmup, f.lookahead) for f in whole]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(streamed, whole, strict=True))
    assert 0 < reader.fetched < 0.3 * len(video)
    # and with the middle of the file altered (not its index), the chunk fails on integrity,
    # not as a broken video: the error surfaces through the decoder as it is
    sealed, layout = bytearray(blob), keyring._Layout(SEGMENT, len(video), b"")
    for i in range(5, layout.segments - 5):
        sealed[layout.sealed(i)[0] + 7] ^= 1
    altered = _reader(client, services, data_key,
                      *_store(client, services, keys, bytes(sealed)))
    with pytest.raises(keyring.RawIntegrityError, match="fails authentication at segment"):
        list(decode_chunk(altered, info, plans[10], warmup=16, lookahead=3))


def test_altered_moved_or_cut_segments_fail_authentication(
        services: Settings, raw_objects: tuple[Minio, list[str]]) -> None:
    client, keys = raw_objects
    original = os.urandom(5 * SEGMENT + 100)
    data_key = keyring.new_data_key()
    blob = keyring.encrypt(data_key, original, SOURCE, segment=SEGMENT)
    header, sealed = keyring._HEADER.size, SEGMENT + 16
    # untouched, any range reads back exactly
    reader = _reader(client, services, data_key, *_store(client, services, keys, blob))
    reader.seek(3 * SEGMENT - 10)
    assert reader.read(50) == original[3 * SEGMENT - 10:3 * SEGMENT + 40]
    # one byte altered in segment 3: segments before it still read, segment 3 does not
    altered = bytearray(blob)
    altered[header + 3 * sealed + 5] ^= 1
    reader = _reader(client, services, data_key, *_store(client, services, keys, bytes(altered)))
    assert reader.read(SEGMENT) == original[:SEGMENT]
    reader.seek(3 * SEGMENT)
    with pytest.raises(keyring.RawIntegrityError, match="segment 3"):
        reader.read(10)
    # segments 1 and 2 swapped: both are refused at their new places
    swapped = blob[:header + sealed] + blob[header + 2 * sealed:header + 3 * sealed] \
        + blob[header + sealed:header + 2 * sealed] + blob[header + 3 * sealed:]
    reader = _reader(client, services, data_key, *_store(client, services, keys, swapped))
    reader.seek(SEGMENT)
    with pytest.raises(keyring.RawIntegrityError, match="segment 1"):
        reader.read(10)
    # the last segment cut off: reading to the end fails, and so does a whole read
    cut = blob[:-(100 + 16)]
    reader = _reader(client, services, data_key, *_store(client, services, keys, cut))
    with pytest.raises(keyring.RawIntegrityError):
        reader.read()
    with pytest.raises(keyring.RawIntegrityError, match="cut off or padded"):
        keyring.decrypt(data_key, cut, SOURCE)
    # and a header that claims a shorter file does not authenticate its segments
    forged = keyring._HEADER.pack(keyring.MAGIC2, SEGMENT, 4 * SEGMENT,
                                  blob[header - 8:header]) + blob[header:header + 4 * sealed]
    with pytest.raises(keyring.RawIntegrityError, match="segment 0"):
        keyring.decrypt(data_key, forged, SOURCE)


def test_segments_are_bound_to_their_source_and_key() -> None:
    original = os.urandom(2 * SEGMENT + 1)
    data_key = keyring.new_data_key()
    blob = keyring.encrypt(data_key, original, SOURCE, segment=SEGMENT)
    assert keyring.decrypt(data_key, blob, SOURCE) == original
    assert original[:64] not in blob
    with pytest.raises(keyring.RawIntegrityError, match="segment 0"):
        keyring.decrypt(data_key, blob, uuid.uuid4())
    with pytest.raises(keyring.RawIntegrityError, match="segment 0"):
        keyring.decrypt(keyring.new_data_key(), blob, SOURCE)
    assert keyring.decrypt(data_key, keyring.encrypt(data_key, b"", SOURCE), SOURCE) == b""


def test_originals_in_the_one_piece_format_stay_readable(
        services: Settings, raw_objects: tuple[Minio, list[str]]) -> None:
    # given an object written before segmenting: MAGIC || nonce || ciphertext+tag
    client, keys = raw_objects
    original = os.urandom(3 * SEGMENT)
    data_key, nonce = keyring.new_data_key(), os.urandom(12)
    legacy = keyring.MAGIC + nonce + AESGCM(data_key).encrypt(nonce, original,
                                                             keyring._aad(SOURCE))
    assert keyring.decrypt(data_key, legacy, SOURCE) == original
    reader = _reader(client, services, data_key, *_store(client, services, keys, legacy))
    reader.seek(SEGMENT)
    assert reader.read(10) == original[SEGMENT:SEGMENT + 10]
    assert reader.size == len(original) and reader.fetched >= len(legacy)


def test_a_large_original_is_sealed_while_it_is_uploaded(
        services: Settings, raw_objects: tuple[Minio, list[str]]) -> None:
    # given 12 MiB, more than one multipart part, sealed on the fly into S3 (as ingest does)
    client, keys = raw_objects
    original = os.urandom(12 * 1024 * 1024 + 5)
    data_key = keyring.new_data_key()
    sealer = keyring.Sealer(data_key, original, SOURCE)
    key = f"test-raw-reader/{uuid.uuid4()}"
    keys.append(key)
    stored = put_stream(client, services.s3.bucket_raw, key,
                        StreamBody(sealer.reader(), sealer.size, sealer.sha256()))
    # then the object is exactly the sealed original, with its checksum recorded beside it
    blob = get_bytes(client, services.s3.bucket_raw, key, version_id=stored.version_id)
    assert len(blob) == sealer.size == stored.size
    assert hashlib.sha256(blob).hexdigest() == stored.sha256
    head = client.stat_object(services.s3.bucket_raw, key, version_id=stored.version_id)
    assert (head.metadata or {}).get(f"x-amz-meta-{SHA256_METADATA}") == stored.sha256
    assert keyring.decrypt(data_key, blob, SOURCE) == original
