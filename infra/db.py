"""PostgreSQL access: connections and the plain-SQL migrations in ``schemas/migrations``.

Every process opens short-lived connections (a worker opens one per task phase): prefork
children must not share a socket created before the fork, and the ledger is small.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row

from infra.settings import Settings, get_settings

_MIGRATION_LOCK = 0x5E11_0001


Row = dict[str, Any]
Conn = psycopg.Connection[Row]


class SuperuserRefused(psycopg.OperationalError):
    """Production refuses to run as a PostgreSQL superuser: privileges would not bind it."""


def connect(settings: Settings | None = None, autocommit: bool = False) -> Conn:
    """A connection as ``settings.db.url``'s user. In production a superuser is refused: the
    grants of ``0008_roles.sql`` (append-only audit, no keys for the operator) bind only the
    roles they name, never a superuser."""
    settings = settings or get_settings()
    conn = psycopg.connect(
        settings.db.url,
        autocommit=autocommit,
        row_factory=dict_row,
        connect_timeout=settings.db.connect_timeout_s,
        application_name="veil",
    )
    if settings.env == "production" and conn.info.parameter_status("is_superuser") == "on":
        user = conn.info.user
        conn.close()
        raise SuperuserRefused(
            f"refusing to run as PostgreSQL superuser {user!r} in production: connect as the "
            "process's own role (veil_producer, veil_worker, ...; docs/security.md)")
    return conn


@contextmanager
def transaction(settings: Settings | None = None) -> Iterator[Conn]:
    """One connection, one transaction: committed on success, rolled back on any error."""
    with connect(settings) as conn:
        with conn.transaction():
            yield conn


_process_connections: dict[tuple[int, str], Conn] = {}


@contextmanager
def process_transaction(settings: Settings | None = None) -> Iterator[Conn]:
    """A transaction on this process's long-lived connection, for hot paths (a worker child
    runs hundreds of jobs a minute; a connect per transaction would cost more than the SQL).

    Keyed by pid, so a forked child never reuses its parent's socket; a connection that failed
    is dropped and the next call reconnects.
    """
    settings = settings or get_settings()
    key = (os.getpid(), settings.db.url)
    conn = _process_connections.get(key)
    if conn is None or conn.closed or conn.broken:
        conn = connect(settings, autocommit=True)
        _process_connections[key] = conn
    try:
        with conn.transaction():
            yield conn
    except psycopg.OperationalError:
        _process_connections.pop(key, None)
        conn.close()
        raise


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) pairs in order, read from the installed ``schemas.migrations`` package."""
    folder = resources.files("schemas").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), folder.joinpath(name).read_text()) for name in names]


def apply_migrations(settings: Settings | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; returns the versions applied.

    An advisory lock makes concurrent callers (several `migrate` containers) wait, not collide.
    """
    applied: list[str] = []
    with connect(settings, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)  # type: ignore[call-overload]
                    _hand_to_owner(conn)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


def _hand_to_owner(conn: Conn) -> None:
    """Give what a migration created to ``veil_owner`` (``veil_take_ownership``, from 0008), so
    that ownership does not depend on who connected: a bootstrap superuser locally, veil_owner
    itself in production. Before 0008 there is no such function and nothing to do."""
    if conn.execute("SELECT 1 FROM pg_proc WHERE proname = 'veil_take_ownership'").fetchone():
        conn.execute("SELECT veil_take_ownership()")
