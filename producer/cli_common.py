"""Helpers shared by the `veil` sub-commands: exit codes, progress, service errors."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import click

from infra.settings import DbRole, Settings, get_settings

EXIT_FAILED, EXIT_USAGE, EXIT_SERVICE, EXIT_TIMEOUT = 1, 2, 3, 4


class ServiceUnavailable(click.ClickException):
    exit_code = EXIT_SERVICE


# The PostgreSQL role each command connects as (least privilege, docs/security.md). A command
# not listed keeps ``db.url`` as given (stack, db: the bootstrap or owner connection).
COMMAND_ROLES: dict[str, DbRole] = {
    "ingest": "producer", "watch": "producer", "redact": "producer", "demo": "producer",
    "status": "operator", "export": "operator", "dsar": "operator", "audit": "operator",
    "review": "operator", "metrics": "operator", "report": "operator", "erase": "operator",
    "consent": "operator",
    "purge": "retention", "hold": "retention",
    "worker": "worker", "beat": "worker", "retry": "worker",
}


def load_settings(role: DbRole | None = None) -> Settings:
    """The settings, with ``db.url`` set to the running command's role (``COMMAND_ROLES``) or
    to ``role`` when given."""
    try:
        settings = get_settings()
    except Exception as exc:
        raise click.ClickException(f"bad settings: {exc}") from exc
    if role is None:
        ctx = click.get_current_context(silent=True)
        while ctx is not None and ctx.parent is not None and ctx.parent.parent is not None:
            ctx = ctx.parent
        role = COMMAND_ROLES.get(ctx.info_name or "") if ctx is not None else None
    return settings.for_db_role(role) if role else settings


@contextmanager
def progress_bar(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal; silent for pipes and --json."""
    if not enabled or not sys.stderr.isatty() or total == 0:
        yield lambda n: None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


@contextmanager
def service_errors() -> Iterator[None]:
    """Turn connection failures into one readable line and exit code 3."""
    import psycopg
    import redis.exceptions
    import urllib3.exceptions
    try:
        yield
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(f"PostgreSQL unavailable ({exc}); run `veil stack up` or set "
                                 "VEIL_DB__URL") from exc
    except (redis.exceptions.ConnectionError, ConnectionRefusedError) as exc:
        raise ServiceUnavailable(f"Redis unavailable ({exc}); run `veil stack up` or set "
                                 "VEIL_BROKER__URL") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise ServiceUnavailable(f"S3 unavailable ({exc}); run `veil stack up` or set "
                                 "VEIL_S3__ENDPOINT") from exc


def emit(as_json: bool, payload: Any, lines: Callable[[], Iterable[str]]) -> None:
    """JSON for scripts, or the human lines (built only when they are printed)."""
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        for line in lines():
            click.echo(line)


def parse_source_ids(values: Iterable[str], param_hint: str | None = None) -> list[uuid.UUID]:
    """Source ids given on the command line; one that is not a UUID is a usage error (exit 2)."""
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(value))
        except ValueError as exc:
            raise click.BadParameter(f"not a source id: {value!r}",
                                     param_hint=param_hint) from exc
    return out


def time_option(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """Click callback for a time option: ISO 8601, naive is UTC; a bad value is a usage error."""
    from producer.dsar import parse_time
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
