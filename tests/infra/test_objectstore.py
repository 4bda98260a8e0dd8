"""The object store against the real SeaweedFS S3 server that ``veil stack up`` runs.

Every key lives under a unique prefix and every version is deleted at the end.
"""

from __future__ import annotations

import hashlib
import socket
import uuid
from collections.abc import Callable, Iterator

import pytest
from minio import Minio
from minio.error import S3Error

from infra import objectstore
from infra.objectstore import (
    ObjectTooLargeError,
    Role,
    TransientStorageError,
    client_for,
    delete_all_versions,
    ensure_buckets,
    get_bytes,
    is_transient,
    list_all_versions,
    list_keys,
    list_sizes,
    object_exists,
    put_bytes,
)
from infra.settings import Settings
from infra.stack import stack_up


@pytest.fixture(scope="module")
def stack(settings: Settings) -> Settings:
    stack_up(settings, echo=lambda _line: None)
    return settings


@pytest.fixture()
def admin(stack: Settings) -> Minio:
    return client_for("admin", stack)


@pytest.fixture()
def prefix(stack: Settings, admin: Minio) -> Iterator[str]:
    """A unique key prefix; afterwards every version under it, in every bucket, is gone."""
    prefix = f"test-objectstore-{uuid.uuid4().hex}/"
    yield prefix
    for bucket in stack.s3.buckets():
        for key in {k for k, _ in list_all_versions(admin, bucket, prefix)}:
            delete_all_versions(admin, bucket, key)
        assert list_all_versions(admin, bucket, prefix) == []


def test_put_get_round_trip_keeps_sha256(stack: Settings, admin: Minio, prefix: str) -> None:
    data = b"\x00veil\xff" * 1000
    bucket, key = stack.s3.bucket_raw, f"{prefix}a.bin"
    stored = put_bytes(admin, bucket, key, data, content_type="image/jpeg")

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data) and stored.version_id and stored.etag
    assert get_bytes(admin, bucket, key) == data
    stat = admin.stat_object(bucket, key)
    assert stat.metadata is not None and stat.metadata["x-amz-meta-sha256"] == stored.sha256
    assert stat.content_type == "image/jpeg"


def test_versions_are_kept_and_all_deleted(stack: Settings, admin: Minio, prefix: str) -> None:
    bucket, key = stack.s3.bucket_raw, f"{prefix}same-key"
    first, *_ = [put_bytes(admin, bucket, key, f"v{i}".encode()) for i in range(3)]
    admin.remove_object(bucket, key)  # a plain delete only adds a marker: the bytes survive

    assert len(list_all_versions(admin, bucket, prefix)) == 4
    assert not object_exists(admin, bucket, key)
    assert get_bytes(admin, bucket, key, version_id=first.version_id) == b"v0"

    assert delete_all_versions(admin, bucket, key) == 4
    assert list_all_versions(admin, bucket, prefix) == []
    assert delete_all_versions(admin, bucket, key) == 0


def test_delete_all_versions_spares_keys_sharing_the_prefix(
    stack: Settings, admin: Minio, prefix: str
) -> None:
    bucket = stack.s3.bucket_work
    put_bytes(admin, bucket, f"{prefix}chunk", b"1")
    put_bytes(admin, bucket, f"{prefix}chunk-2", b"2")

    assert delete_all_versions(admin, bucket, f"{prefix}chunk") == 1
    assert list(list_keys(admin, bucket, prefix)) == [f"{prefix}chunk-2"]


def test_list_sizes_gives_each_objects_size(stack: Settings, admin: Minio, prefix: str) -> None:
    bucket = stack.s3.bucket_work
    put_bytes(admin, bucket, prefix + "a/1", b"x" * 10)
    put_bytes(admin, bucket, prefix + "b", b"")

    assert sorted(list_sizes(admin, bucket, prefix)) == [(prefix + "a/1", 10), (prefix + "b", 0)]


def test_list_keys_non_recursive_shows_folders(stack: Settings, admin: Minio, prefix: str) -> None:
    bucket = stack.s3.bucket_work
    for key in ("a/1", "a/2", "b"):
        put_bytes(admin, bucket, prefix + key, b"x")

    assert sorted(list_keys(admin, bucket, prefix)) == [prefix + k for k in ("a/1", "a/2", "b")]
    assert sorted(list_keys(admin, bucket, prefix, recursive=False)) == [prefix + "a/",
                                                                          prefix + "b"]


def test_get_bytes_refuses_an_object_over_max_bytes(
    stack: Settings, admin: Minio, prefix: str
) -> None:
    bucket, key = stack.s3.bucket_raw, f"{prefix}big"
    put_bytes(admin, bucket, key, b"x" * 1000)

    with pytest.raises(ObjectTooLargeError, match=r"1000 bytes, over the limit of 999"):
        get_bytes(admin, bucket, key, max_bytes=999)
    assert len(get_bytes(admin, bucket, key, max_bytes=1000)) == 1000


def test_ensure_buckets_is_idempotent_and_versions(stack: Settings, admin: Minio) -> None:
    assert ensure_buckets(stack) == []
    for bucket in stack.s3.buckets():
        assert admin.get_bucket_versioning(bucket).status == "Enabled"


# Which role may do what, as the server enforces it (s3.json scopes each action to a bucket).
ALLOWED: list[tuple[Role, str, str, bool]] = [
    ("producer", "put", "raw", True),
    ("producer", "put", "redacted", False),
    ("producer", "get", "redacted", False),
    ("worker", "get", "raw", True),
    ("worker", "put", "raw", False),
    ("worker", "delete", "raw", False),
    ("worker", "put", "work", True),
    ("worker", "put", "redacted", True),
    ("operator", "get", "redacted", True),
    ("operator", "put", "raw", False),
    ("operator", "get", "raw", False),
    ("operator", "list", "raw", False),
    ("operator", "put", "redacted", False),
    ("operator", "delete", "redacted", False),
]


@pytest.mark.parametrize(("role", "action", "bucket_role", "allowed"), ALLOWED)
def test_roles_touch_only_their_buckets(
    stack: Settings, admin: Minio, prefix: str,
    role: Role, action: str, bucket_role: str, allowed: bool,
) -> None:
    bucket = getattr(stack.s3, f"bucket_{bucket_role}")
    key = f"{prefix}{role}-{action}"
    if action != "put":
        put_bytes(admin, bucket, key, b"seed")
    client = client_for(role, stack)
    attempts: dict[str, Callable[[], object]] = {
        "put": lambda: put_bytes(client, bucket, key, b"by " + role.encode()),
        "get": lambda: get_bytes(client, bucket, key),
        "list": lambda: list(list_keys(client, bucket, prefix)),
        "delete": lambda: client.remove_object(bucket, key),
    }
    if allowed:
        attempts[action]()
        return
    with pytest.raises(S3Error) as denied:
        attempts[action]()
    assert denied.value.code == "AccessDenied"
    assert not is_transient(denied.value)
    assert len(list_all_versions(admin, bucket, key)) == (0 if action == "put" else 1)


def test_missing_object_is_a_permanent_error(stack: Settings, admin: Minio, prefix: str) -> None:
    with pytest.raises(S3Error) as missing:
        get_bytes(admin, stack.s3.bucket_raw, f"{prefix}nothing")
    assert missing.value.code == "NoSuchKey"
    assert not is_transient(missing.value)
    assert not object_exists(admin, stack.s3.bucket_raw, f"{prefix}nothing")


def test_unreachable_store_is_transient(stack: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = stack.model_copy(
        update={"s3": stack.s3.model_copy(update={"endpoint": f"127.0.0.1:{closed_port}"})}
    )
    client = client_for("admin", down, retries=0)

    with pytest.raises(TransientStorageError) as unreachable:
        object_exists(client, stack.s3.bucket_raw, "any")
    assert is_transient(unreachable.value)
    assert is_transient(unreachable.value.__cause__)  # type: ignore[arg-type]
    assert objectstore.is_transient(ConnectionRefusedError())
