"""`veil worker | beat | flower`: thin wrappers over the Celery and Flower commands."""

from __future__ import annotations

import os
import sys

import click

from infra.settings import Settings
from producer.cli_common import load_settings


def _celery(*args: str, env: dict[str, str] | None = None) -> None:
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", *args]
    os.execvpe(argv[0], argv, {**os.environ, **(env or {})})


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("-c", "--concurrency", type=int, help="Worker processes (default: settings, else "
              "CPU count).")
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.option("-Q", "--queues", "workloads", metavar="LIST",
              help="Comma-separated workloads to consume: images, chunks, assembly, maintenance "
              "(default: all of them). E.g. a GPU node: --queues chunks.")
@click.option("--retention", is_flag=True, help="Be the retention worker instead: purge, erasure "
              "and inbox clean-up (the retention queue), as the PostgreSQL and S3 role that "
              "alone may delete.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency: int | None, loglevel: str, workloads: str | None, retention: bool,
           celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker (every job workload and maintenance, task events on)."""
    from infra.broker import QUEUE_RETENTION, queue_name
    settings = load_settings("retention" if retention else "worker")
    wanted = (QUEUE_RETENTION,) if retention else _workloads(workloads)
    queues = ",".join(queue_name(settings, q) for q in wanted)
    args = ["worker", "-E", "-Q", queues, "--loglevel", loglevel]
    n = concurrency or settings.worker_concurrency
    if n:
        args += ["--concurrency", str(n)]
    _celery(*args, *(["-n", "retention@%h"] if retention else []), *celery_args,
            env=_role_env(settings))


def _workloads(given: str | None) -> tuple[str, ...]:
    """The queues named by ``--queues``; retention is refused here because it needs another
    database and S3 role (`--retention`)."""
    from infra.broker import WORKER_QUEUES
    if given is None:
        return WORKER_QUEUES
    names = tuple(dict.fromkeys(n.strip() for n in given.split(",") if n.strip()))
    unknown = [n for n in names if n not in WORKER_QUEUES]
    if "retention" in unknown:
        raise click.BadParameter("the retention queue has its own worker: use --retention",
                                 param_hint="--queues")
    if unknown or not names:
        raise click.BadParameter(f"unknown workload {', '.join(unknown) or '(none)'}; choose "
                                 f"from {', '.join(WORKER_QUEUES)}", param_hint="--queues")
    return names


def _role_env(settings: Settings) -> dict[str, str]:
    """The Celery children read their settings again: hand them this role's connection only."""
    return {"VEIL_DB__URL": settings.db.url, "VEIL_DB__ROLE_USERS": "false",
            "VEIL_DB__ROLE_URLS": "{}"}


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("-l", "--loglevel", default="INFO", show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(loglevel: str, celery_args: tuple[str, ...]) -> None:
    """Run Celery beat: outbox relay every 10 s, lease sweeper (in beat itself) and retention
    purge every minute (`limits.sweep_interval_s`, `retention.purge_interval_s`), orphan
    reconciler every 5 minutes (`limits.reconcile_interval_s`)."""
    settings = load_settings("worker")  # the sweeper updates jobs as the worker role does
    settings.stack.state_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.stack.state_dir / "celerybeat-schedule"
    _celery("beat", "--loglevel", loglevel, "--schedule", str(schedule), *celery_args,
            env=_role_env(settings))


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, help="Port (default: settings.stack.flower_port).")
@click.option("--address", default="127.0.0.1", show_default=True)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int | None, address: str, flower_args: tuple[str, ...]) -> None:
    """Run the Flower dashboard (basic auth from settings; /metrics for Prometheus).

    Read-only: its login cannot send, revoke or rate-limit tasks (Flower's --read_only), so a
    leaked Flower password cannot start an erasure or a purge (docs/security.md)."""
    from infra.settings import DEFAULT_SECRET
    settings = load_settings()
    if settings.env == "production" and \
            settings.stack.flower_password.get_secret_value() == DEFAULT_SECRET:
        raise click.ClickException("production refuses the default credentials: set "
                                   "VEIL_STACK__FLOWER_PASSWORD")
    auth = f"{settings.stack.flower_user}:{settings.stack.flower_password.get_secret_value()}"
    _celery("flower", f"--port={port or settings.stack.flower_port}", f"--address={address}",
            "--read_only=True", *flower_args, env={"FLOWER_BASIC_AUTH": auth})
