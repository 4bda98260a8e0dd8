"""Object storage through the ``minio`` client only, so the same code runs on MinIO and SeaweedFS.

Each role (admin, producer, worker, retention, hold, operator) gets its own credentials; the
server decides what a role may touch, by the one table in ``infra.grants`` (SeaweedFS:
``infra.stack.s3_identities`` and bucket policies; MinIO: ``infra/assets/minio-policy-*``).

Error contract: a failure worth retrying (connection refused, timeouts, HTTP 5xx, ``SlowDown``)
leaves these functions as :class:`TransientStorageError`, chained to the original; anything else
(``NoSuchKey``, ``AccessDenied``, an oversized object) is permanent and propagates unchanged.

Hazards: never log object contents or presigned URLs (invariant 5); buckets are versioned, so
"delete" must mean :func:`delete_all_versions`, or the bytes survive as a non-current version.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Literal

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.versioningconfig import VersioningConfig
from urllib3 import exceptions as urllib3_errors

from infra.settings import DEFAULT_SECRET, Settings, get_settings

log = logging.getLogger(__name__)

Role = Literal["admin", "producer", "worker", "retention", "hold", "operator"]

SHA256_METADATA = "sha256"
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NoSuchVersion", "ResourceNotFound"})
_TRANSIENT_CODES = frozenset({
    "SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "OperationAborted",
    "RequestTimeTooSkewed", "XMinioServerNotInitialized", "XAmzContentSHA256Mismatch",
})
_TRANSIENT_NETWORK = (
    ConnectionError,  # includes ConnectionRefusedError and ConnectionResetError
    TimeoutError,
    urllib3_errors.MaxRetryError,
    urllib3_errors.TimeoutError,
    urllib3_errors.ProtocolError,
    urllib3_errors.ResponseError,
)


class TransientStorageError(Exception):
    """The store did not answer or asked us to back off; the same call may succeed later."""


class ObjectTooLargeError(ValueError):
    """An object exceeds the caller's size limit; it was not read (invariant 7)."""


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    version_id: str | None
    sha256: str
    size: int
    etag: str


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: network failures, timeouts, 5xx and throttling."""
    if isinstance(exc, TransientStorageError):
        return True
    if isinstance(exc, S3Error):
        status = exc.response.status if exc.response is not None else 0
        return exc.code in _TRANSIENT_CODES or status >= 500
    if isinstance(exc, ServerError):
        return exc.status_code >= 500
    if isinstance(exc, InvalidResponseError):
        return exc._code >= 500
    if isinstance(exc, urllib3_errors.MaxRetryError):
        # Certificate problems are configuration, not weather.
        return not isinstance(exc.reason, urllib3_errors.SSLError)
    return isinstance(exc, _TRANSIENT_NETWORK)


@contextmanager
def transient_errors() -> Iterator[None]:
    """Re-raise transient failures as :class:`TransientStorageError`; leave the rest alone."""
    try:
        yield
    except TransientStorageError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise TransientStorageError(f"object store unavailable: {_describe(exc)}") from exc
        raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, S3Error):
        return f"{exc.code} on {exc.bucket_name}/{exc.object_name}"
    return f"{type(exc).__name__}: {exc}"


_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "AccountProblem"})
_CREDENTIAL_CODES = frozenset({"InvalidAccessKeyId", "SignatureDoesNotMatch"})


def explain_error(client: Minio, exc: BaseException, bucket: str, key: str = "",
                  known: Collection[str] = ()) -> str:
    """Which of missing bucket, no permission or missing object an S3 error means, in words.

    Hazard: a server with per-bucket grants (SeaweedFS identities, MinIO policies) answers
    ``AccessDenied`` for a bucket that does not exist as for one the identity may not read, and
    ``ListBuckets`` shows an identity only the buckets it has a grant on. So a denied bucket
    that the identity can see, or one of ``known`` (Veil's own buckets, which exist), is refused
    (no permission); any other denied bucket is one that no grant makes visible: missing, as far
    as this identity can tell, and the message says so.
    """
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if not isinstance(exc, S3Error):
        return f"cannot reach {where}: {_describe(exc)}"
    if exc.code == "NoSuchBucket":
        return f"bucket {bucket!r} does not exist (missing bucket)"
    if exc.code in _MISSING_CODES:
        return f"no object at {where} (missing object)"
    if exc.code in _CREDENTIAL_CODES:
        return f"the S3 server does not accept this identity's credentials ({exc.code})"
    if exc.code not in _DENIED_CODES:
        return f"S3 refused {where}: {exc.code}"
    try:
        visible: list[str] | None = sorted(b.name for b in client.list_buckets())
    except Exception:  # noqa: BLE001 - the listing only sharpens the message
        visible = None
    if bucket in known or (visible is not None and bucket in visible):
        return f"no permission: this S3 identity may not read {where} (the bucket exists)"
    seen = f"; buckets it can see: {', '.join(visible)}" if visible else ""
    return (f"bucket {bucket!r} does not exist (missing bucket: no bucket of that name is "
            f"visible to this S3 identity, the server answered AccessDenied{seen})")


def client_for(
    role: Role,
    settings: Settings | None = None,
    *,
    connect_timeout_s: float = 10.0,
    read_timeout_s: float = 120.0,
    retries: int = 3,
) -> Minio:
    """A client with ``role``'s credentials and bounded timeouts (minio's default waits 5 min)."""
    settings = settings or get_settings()
    creds = settings.s3_roles()[role]
    if settings.env == "production" and creds.secret_key.get_secret_value() == DEFAULT_SECRET:
        raise PermissionError(
            f"this process has no S3 credentials for role {role!r}: production refuses the "
            f"development default (set VEIL_S3__{role.upper()}__ACCESS_KEY and __SECRET_KEY)")
    tls: dict[str, str] = {}
    if settings.s3.secure:
        tls = {"cert_reqs": "CERT_REQUIRED"}
        if settings.s3.ca_file is not None:
            tls["ca_certs"] = str(settings.s3.ca_file)
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
        maxsize=10,
        **tls,  # type: ignore[arg-type]
        retries=urllib3.Retry(
            total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )
    return Minio(
        settings.s3.endpoint,
        access_key=creds.access_key,
        secret_key=creds.secret_key.get_secret_value(),
        secure=settings.s3.secure,
        region=settings.s3.region,
        http_client=http,
    )


def ensure_buckets(settings: Settings | None = None) -> list[str]:
    """Create the four buckets with versioning on; idempotent. Returns the ones it created.

    New buckets get S3 object lock when ``retention.s3_object_lock`` is on (it can only be
    chosen at creation), so legal holds are enforced by the server too; existing buckets are
    left as they are.
    """
    settings = settings or get_settings()
    client = client_for("admin", settings)
    created = []
    with transient_errors():
        for bucket in settings.s3.buckets():
            if not client.bucket_exists(bucket):
                try:
                    client.make_bucket(bucket, object_lock=settings.retention.s3_object_lock)
                    created.append(bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
            if client.get_bucket_versioning(bucket).status != ENABLED:
                client.set_bucket_versioning(bucket, VersioningConfig(ENABLED))
    return created


def put_bytes(
    client: Minio,
    bucket: str,
    key: str,
    data: bytes,
    content_type: str = "application/octet-stream",
    metadata: dict[str, str] | None = None,
) -> StoredObject:
    """Store ``data``; its sha256 is kept as object metadata and returned for the ledger."""
    body = StreamBody(io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest())
    return put_stream(client, bucket, key, body, content_type, metadata)


@dataclass(frozen=True)
class StreamBody:
    """What to upload: ``size`` bytes from ``stream``, whose ``sha256`` the caller computed,
    and how many multipart parts may be in flight at once (each holds about 15 MB)."""

    stream: BinaryIO | io.RawIOBase
    size: int
    sha256: str
    parallel_parts: int = 3


def put_stream(
    client: Minio,
    bucket: str,
    key: str,
    body: StreamBody,
    content_type: str = "application/octet-stream",
    metadata: dict[str, str] | None = None,
) -> StoredObject:
    """Store ``size`` bytes read from ``stream`` (multipart when large), whose ``sha256`` the
    caller computed, without holding them all in memory. Each part in flight holds about
    15 MB (5-MiB parts, copied while signed): ``parallel_parts=1`` bounds a huge upload's
    memory to about 20 MB (measured; 3 parts: about 35 MB)."""
    stream, size, sha256 = body.stream, body.size, body.sha256
    meta = {**(metadata or {}), SHA256_METADATA: sha256}
    with transient_errors():
        result = client.put_object(
            bucket, key, stream, size, content_type=content_type,  # type: ignore[arg-type]
            metadata=meta, num_parallel_uploads=body.parallel_parts,  # type: ignore[arg-type]
        )
    return StoredObject(bucket=bucket, key=key, version_id=result.version_id, sha256=sha256,
                        size=size, etag=(result.etag or "").strip('"'))


def get_range(client: Minio, bucket: str, key: str, offset: int, length: int,
              version_id: str | None = None) -> bytes:
    """``length`` bytes of an object from ``offset`` (fewer at its end): one range request."""
    with transient_errors():
        response = client.get_object(bucket, key, offset=offset, length=length,
                                     version_id=version_id)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()


def get_bytes(
    client: Minio,
    bucket: str,
    key: str,
    version_id: str | None = None,
    max_bytes: int | None = None,
) -> bytes:
    """Read a whole object into memory, refusing one larger than ``max_bytes`` before reading."""
    with transient_errors():
        if max_bytes is not None:
            size = client.stat_object(bucket, key, version_id=version_id).size or 0
            if size > max_bytes:
                raise ObjectTooLargeError(
                    f"object {bucket}/{key} is {size} bytes, over the limit of {max_bytes}"
                )
        response = client.get_object(bucket, key, version_id=version_id)
        try:
            # Read one byte past the limit: the object may have grown since the stat.
            data = response.read(None if max_bytes is None else max_bytes + 1)
        finally:
            response.close()
            response.release_conn()
    if max_bytes is not None and len(data) > max_bytes:
        raise ObjectTooLargeError(f"object {bucket}/{key} is over the limit of {max_bytes} bytes")
    return data


def object_exists(client: Minio, bucket: str, key: str) -> bool:
    """True when the current version exists (a delete marker on top counts as absent)."""
    with transient_errors():
        try:
            client.stat_object(bucket, key)
        except S3Error as exc:
            if exc.code in _MISSING_CODES or exc.response.status == 404:
                return False
            raise
    return True


def list_keys(
    client: Minio, bucket: str, prefix: str = "", recursive: bool = True
) -> Iterator[str]:
    """Keys of current objects under ``prefix``; non-recursive listings also yield ``dir/``."""
    with transient_errors():
        for obj in client.list_objects(bucket, prefix=prefix, recursive=recursive):
            if obj.object_name is not None:
                yield obj.object_name


def list_sizes(client: Minio, bucket: str, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(key, size in bytes) of every current object under ``prefix``."""
    with transient_errors():
        for obj in client.list_objects(bucket, prefix=prefix, recursive=True):
            if obj.object_name is not None and not obj.is_dir:
                yield obj.object_name, int(obj.size or 0)


def list_all_versions(client: Minio, bucket: str, prefix: str = "") -> list[tuple[str, str | None]]:
    """Every (key, version_id) under ``prefix``, delete markers included."""
    with transient_errors():
        return [
            (obj.object_name, obj.version_id)
            for obj in client.list_objects(bucket, prefix=prefix, recursive=True,
                                           include_version=True)
            if obj.object_name is not None
        ]


def delete_all_versions(client: Minio, bucket: str, key: str) -> int:
    """Remove every version and delete marker of exactly ``key``; returns how many went.

    A plain DELETE on a versioned bucket only adds a marker and keeps the bytes, which would
    break invariant 4. A version under legal hold refuses deletion: that error propagates.
    """
    return len(delete_versions(client, bucket, key))


def delete_versions(client: Minio, bucket: str, key: str) -> list[str | None]:
    """Like :func:`delete_all_versions`, returning the version ids removed (for receipts);
    ``None`` stands for the single version of an unversioned bucket."""
    removed: list[str | None] = []
    for passes in range(4):  # a concurrent writer may add a version while we delete
        versions = [v for k, v in list_all_versions(client, bucket, key) if k == key]
        if not versions:
            break
        if passes == 3:
            raise TransientStorageError(f"{bucket}/{key} kept gaining versions while deleted")
        with transient_errors():
            for version_id in versions:
                client.remove_object(bucket, key, version_id=version_id)
                removed.append(version_id)
    log.info("deleted %d versions of %s/%s", len(removed), bucket, key)
    return removed


def supports_object_lock(client: Minio, bucket: str) -> bool:
    """True when ``bucket`` was created with object lock, so a legal hold binds the server.

    Hazard: SeaweedFS accepts a legal hold on a bucket without object lock and then ignores it;
    ask this before promising that a hold is enforced by S3.
    """
    with transient_errors():
        try:
            client.get_object_lock_config(bucket)
        except S3Error as exc:
            if exc.code in ("ObjectLockConfigurationNotFoundError", "InvalidRequest",
                            "NoSuchObjectLockConfiguration"):
                return False
            raise
    return True


def set_legal_hold(client: Minio, bucket: str, key: str, enabled: bool) -> int:
    """Turn the S3 legal hold of every version of ``key`` on or off; returns how many versions.

    Delete markers carry no data and take no hold; they are skipped.
    """
    changed = 0
    with transient_errors():
        for obj in client.list_objects(bucket, prefix=key, recursive=True, include_version=True):
            if obj.object_name != key or obj.is_delete_marker:
                continue
            if enabled:
                client.enable_object_legal_hold(bucket, key, version_id=obj.version_id)
            else:
                client.disable_object_legal_hold(bucket, key, version_id=obj.version_id)
            changed += 1
    return changed
