"""The S3 role matrix against the real SeaweedFS server of `veil stack up`: every capability of
the table in ``infra.grants`` is tried by every role on every bucket, and must succeed exactly
where the table says so. The MinIO policy files must be what the same table renders."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from minio import Minio
from minio.error import S3Error

from infra import grants
from infra.grants import GRANTS, Cap, allowed
from infra.objectstore import client_for, delete_all_versions, list_all_versions, put_bytes
from infra.settings import Settings
from infra.stack import stack_up

REPO = Path(__file__).resolve().parents[2]
KINDS: list[grants.BucketKind] = ["inbox", "raw", "work", "redacted"]
RUNTIME_ROLES = list(GRANTS)


@pytest.fixture(scope="module")
def stack(settings: Settings) -> Settings:
    """The stack as CI starts it: identities and bucket policies from the table."""
    stack_up(settings, echo=lambda _line: None)
    return settings


@pytest.fixture(scope="module")
def admin(stack: Settings) -> Minio:
    return client_for("admin", stack)


@pytest.fixture()
def prefix(stack: Settings, admin: Minio) -> Iterator[str]:
    prefix = f"test-grants-{uuid.uuid4().hex}/"
    yield prefix
    for kind in KINDS:
        bucket = grants.bucket_name(stack.s3, kind)
        for key, version in list_all_versions(admin, bucket, prefix):
            try:
                admin.disable_object_legal_hold(bucket, key, version_id=version)
            except S3Error:
                pass  # a delete marker carries no hold
        for key in {k for k, _ in list_all_versions(admin, bucket, prefix)}:
            delete_all_versions(admin, bucket, key)


def _attempt(action: Callable[[], object]) -> bool:
    """True when the server let the call through, False when it refused it (AccessDenied)."""
    try:
        action()
    except S3Error as exc:
        assert exc.code == "AccessDenied", exc.code
        return False
    return True


def _try(cap: Cap, client: Minio, admin: Minio, bucket: str, prefix: str) -> bool:
    key = f"{prefix}{cap}-{uuid.uuid4().hex[:8]}"
    if cap is Cap.PUT:
        return _attempt(lambda: client.put_object(bucket, key, io.BytesIO(b"x"), 1))
    if cap is Cap.LIST:
        return _attempt(lambda: list(client.list_objects(bucket, prefix=prefix,
                                                         include_version=True)))
    version = put_bytes(admin, bucket, key, b"object of the matrix").version_id
    if cap is Cap.READ:
        return _attempt(lambda: client.get_object(bucket, key, version_id=version).read())
    if cap is Cap.DELETE:
        done = _attempt(lambda: client.remove_object(bucket, key, version_id=version))
        still_there = (key, version) in list_all_versions(admin, bucket, key)
        assert done != still_there  # a refusal leaves the version, a grant removes it
        return done
    return _attempt(lambda: client.enable_object_legal_hold(bucket, key, version_id=version))


MATRIX = [(role, kind, cap) for role in RUNTIME_ROLES for kind in KINDS for cap in Cap]


@pytest.mark.parametrize(("role", "kind", "cap"), MATRIX,
                         ids=[f"{r}-{k}-{c}" for r, k, c in MATRIX])
def test_each_role_can_do_exactly_what_the_table_grants(
    stack: Settings, admin: Minio, prefix: str, role: str, kind: grants.BucketKind, cap: Cap
) -> None:
    # given the role's own credentials, when it tries the action on the bucket
    done = _try(cap, client_for(role, stack), admin, grants.bucket_name(stack.s3, kind), prefix)  # type: ignore[arg-type]

    # then the server agrees with the table
    assert done == allowed(role, kind, cap)


def test_the_matrix_holds_many_refusals() -> None:
    refusals = [m for m in MATRIX if not allowed(*m)]
    assert len(refusals) >= 30
    assert ("producer", "raw", Cap.DELETE) in refusals and ("worker", "raw", Cap.DELETE) in refusals
    assert all(not allowed(r, k, Cap.DELETE) for r in RUNTIME_ROLES if r != "retention"
               for k in KINDS)
    assert all(not allowed(r, k, Cap.HOLD) for r in RUNTIME_ROLES if r != "hold" for k in KINDS)


def test_a_held_version_refuses_even_the_retention_role(
    stack: Settings, admin: Minio, prefix: str
) -> None:
    bucket, key = stack.s3.bucket_raw, f"{prefix}held"
    version = put_bytes(admin, bucket, key, b"evidence").version_id
    hold = client_for("hold", stack)
    hold.enable_object_legal_hold(bucket, key, version_id=version)

    assert not _attempt(lambda: client_for("retention", stack).remove_object(
        bucket, key, version_id=version))
    hold.disable_object_legal_hold(bucket, key, version_id=version)
    client_for("retention", stack).remove_object(bucket, key, version_id=version)
    assert list_all_versions(admin, bucket, key) == []


def test_only_admin_creates_buckets(stack: Settings) -> None:
    name = f"veil-test-grants-{uuid.uuid4().hex[:8]}"
    for role in RUNTIME_ROLES:
        assert not _attempt(lambda r=role: client_for(r, stack).make_bucket(name))  # type: ignore[misc]


@pytest.mark.parametrize("role", grants.ROLES)
def test_minio_policy_files_are_rendered_from_the_table(role: str) -> None:
    path = REPO / "infra" / "assets" / f"minio-policy-{role}.json"

    assert path.read_text() == grants.minio_policy_text(role), \
        "regenerate with: python -m infra.grants"


@pytest.mark.parametrize(("role", "kind", "cap"), MATRIX,
                         ids=[f"{r}-{k}-{c}" for r, k, c in MATRIX])
def test_minio_policy_says_what_seaweedfs_enforces(role: str, kind: grants.BucketKind,
                                                   cap: Cap) -> None:
    policy = grants.minio_policy(role)
    bucket = grants.bucket_name(Settings().s3, kind)
    granted = {a for st in policy["Statement"] for a in st["Action"]
               for res in st["Resource"] if res.split(":::")[1].split("/")[0] == bucket}
    wanted = set(grants.OBJECT_ACTIONS[cap]) | set(grants.BUCKET_ACTIONS.get(cap, ()))

    assert (wanted <= granted) == allowed(role, kind, cap)
    if not allowed(role, kind, cap):
        assert not wanted & granted
