"""The PostgreSQL role matrix: the test database as each runtime role sees it (connected AS
veil_producer, veil_worker, veil_retention, veil_operator; migration 0008 creates them).

Every statement runs in a transaction that is rolled back, so nothing is left behind."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from infra.settings import DbRole, Settings, plaintext_connections

RUNTIME: list[DbRole] = ["producer", "worker", "retention", "operator"]
SOURCE = ("INSERT INTO sources (id, sha256, kind, media_format, original_name, size_bytes,"
          " raw_bucket, raw_key, policy_name, policy_version, policy) VALUES"
          " ('{id}', '{id}', 'image', 'jpeg', 'x.jpg', 1, 'veil-raw', 'k', 'p', 1, '{{}}')")

# Rewriting the audit trail, reading or destroying keys, lifting a hold: refused for each role.
TAMPER = {
    "update audit": "UPDATE audit_events SET actor = 'nobody'",
    "delete audit": "DELETE FROM audit_events",
    "truncate audit": "TRUNCATE audit_events",
    "disable audit trigger": "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update",
    "replication role": "SET session_replication_role = replica",
    "drop audit": "DROP TABLE audit_events",
    "delete keys": "DELETE FROM keyring.data_keys",
    "lift a hold": "UPDATE legal_holds SET released_at = now()",
    "delete holds": "DELETE FROM legal_holds",
    "lift a hold through the view": "UPDATE active_legal_holds SET released_at = now()",
    "delete sources": "DELETE FROM sources",
}
# `veil hold` connects as veil_retention: lifting a hold is its job (and in ALLOWED_FOR).
REFUSED = [(role, name) for role in RUNTIME for name in TAMPER
           if (role, name) != ("retention", "lift a hold")]
# Beyond the common list: what one role must not do that another may.
REFUSED_FOR = [
    ("operator", "SELECT count(*) FROM keyring.data_keys"),
    ("producer", "UPDATE keyring.data_keys SET key = NULL, destroyed_at = now()"),
    ("worker", "UPDATE keyring.data_keys SET key = NULL, destroyed_at = now()"),
    ("operator", "UPDATE keyring.data_keys SET key = NULL, destroyed_at = now()"),
    ("producer", "INSERT INTO legal_holds (source_id, reason, set_by) SELECT id, 'r', 'x'"
                 " FROM sources"),
    ("worker", "INSERT INTO legal_holds (source_id, reason, set_by) SELECT id, 'r', 'x'"
               " FROM sources"),
    ("operator", "INSERT INTO legal_holds (source_id, reason, set_by) SELECT id, 'r', 'x'"
                 " FROM sources"),
    ("operator", "UPDATE deletion_tasks SET state = 'done'"),
    ("worker", "UPDATE erasure_requests SET state = 'done'"),
    ("producer", "INSERT INTO erasure_requests (id, source_ids, reason, requested_by)"
                 " VALUES (gen_random_uuid(), '{}', 'r', 'x')"),
    ("operator", "UPDATE sources SET original_name = 'x'"),
    ("worker", "UPDATE sources SET original_name = 'x'"),
]
ALLOWED_FOR = [
    ("producer", "INSERT INTO keyring.data_keys (source_id, key) VALUES"
                 " (gen_random_uuid(), decode(repeat('00', 32), 'hex'))"),
    ("worker", "SELECT count(*) FROM keyring.data_keys"),
    ("retention", "UPDATE keyring.data_keys SET key = NULL, destroyed_at = now()"),
    ("retention", "UPDATE legal_holds SET released_at = now()"),
    ("retention", "UPDATE sources SET camera = NULL"),
    ("operator", "INSERT INTO erasure_requests (id, source_ids, reason, requested_by)"
                 " VALUES (gen_random_uuid(), '{}', 'r', 'x')"),
    ("operator", "SELECT count(*) FROM sources JOIN jobs ON jobs.source_id = sources.id"),
    ("operator", "SELECT count(*) FROM audit_events"),
    *((role, "INSERT INTO audit_events (actor, action) VALUES ('test', 'test')")
      for role in RUNTIME),
    ("producer", SOURCE.format(id=uuid.uuid4())),
    ("worker", "UPDATE jobs SET state = 'running' WHERE false"),
    *((role, "SELECT count(*) FROM active_legal_holds") for role in RUNTIME),
]


def _run_as(settings: Settings, role: DbRole, statement: str) -> None:
    with psycopg.connect(settings.db.url_for(role)) as conn:
        try:
            with conn.transaction(force_rollback=True):
                conn.execute(statement)  # type: ignore[call-overload]
        finally:
            conn.rollback()


@pytest.mark.parametrize(("role", "name"), REFUSED, ids=[f"{r}-{n}" for r, n in REFUSED])
def test_no_runtime_role_can_tamper(services: Settings, role: DbRole, name: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _run_as(services, role, TAMPER[name])


@pytest.mark.parametrize(("role", "statement"), REFUSED_FOR)
def test_role_is_refused(services: Settings, role: DbRole, statement: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        _run_as(services, role, statement)


@pytest.mark.parametrize(("role", "statement"), ALLOWED_FOR)
def test_role_may_do_its_job(services: Settings, role: DbRole, statement: str) -> None:
    _run_as(services, role, statement)


def test_roles_are_not_superusers_and_the_owner_owns_the_audit_trail(services: Settings) -> None:
    with psycopg.connect(services.db.url) as conn:
        supers = conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'veil\\_%%'"
                              " AND (rolsuper OR rolbypassrls OR rolcreaterole)").fetchall()
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_events'"
                             ).fetchone()
        keyring_readers = {r[0] for r in conn.execute(
            "SELECT grantee FROM information_schema.role_table_grants WHERE"
            " table_schema = 'keyring' AND privilege_type = 'SELECT'")}
    assert supers == []
    assert owner == ("veil_owner",)
    assert "veil_operator" not in keyring_readers


def test_production_refuses_a_superuser_connection(services: Settings) -> None:
    from infra import db
    prod = services.model_copy(update={"env": "production"})
    with pytest.raises(db.SuperuserRefused, match="superuser"):
        db.connect(prod)
    db.connect(prod.for_db_role("operator")).close()  # a runtime role is fine


def test_production_refuses_plaintext_connections(services: Settings) -> None:
    problems = plaintext_connections(services)
    assert any("S3 without TLS" in p for p in problems)
    assert any("sslmode=verify-full" in p for p in problems)
    assert any("rediss://" in p for p in problems)
    secure = services.model_copy(update={
        "s3": services.s3.model_copy(update={"secure": True}),
        "db": services.db.model_copy(update={
            "url": "postgresql://veil_worker@db:5432/veil?sslmode=verify-full&sslrootcert=ca"}),
        "broker": services.broker.model_copy(update={"url": "rediss://redis:6379/0",
                                                     "result_url": "rediss://redis:6379/1"})})
    assert plaintext_connections(secure) == []
    half = secure.model_copy(update={"db": secure.db.model_copy(update={
        "url": "postgresql://veil_worker@db/veil?sslmode=require"})})
    assert plaintext_connections(half) == ["db.url without sslmode=verify-full"]
