"""A private Veil stack for fault runs: its own Redis, PostgreSQL cluster and SeaweedFS S3 on
free private ports under one temporary folder, plus workers and beat, each started and stopped by
pid, so a run can kill and restart any of them without touching anyone else's services.

Used by ``tests/test_faults.py`` (short run) and ``bench/faults.py`` (long run). Hazards:
initdb refuses to run as root, so as root PostgreSQL runs as the ``postgres`` user (its folder is
handed to that user); SeaweedFS takes port P+10000 for each port P, so ports are checked in
pairs; a SIGTERMed ``weed`` can take 30 s to exit, so it is stopped with SIGKILL (a crash is also
the harder fault).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import redis

from infra import stack
from infra.settings import (
    BrokerSettings,
    DatabaseSettings,
    LimitSettings,
    S3Settings,
    Settings,
    StackSettings,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
VEIL = str(Path(sys.executable).parent / "veil")
REPO = Path(__file__).resolve().parent.parent


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(paired: int, plain: int) -> list[int]:
    """``paired`` free ports with P+10000 free too (SeaweedFS's gRPC), then ``plain`` more, all
    distinct, in 20000-29999, starting from a place that depends on the pid."""
    taken: set[int] = set()
    ports: list[int] = []
    candidate = 20000 + (os.getpid() * 37) % 9000
    while len(ports) < paired + plain:
        candidate = 20000 + (candidate - 20000 + 7) % 9990
        pair = len(ports) < paired
        wanted = {candidate, candidate + 10000} if pair else {candidate}
        if wanted & taken or not all(_free(p) for p in wanted):
            continue
        taken |= wanted
        ports.append(candidate)
    return ports


class FaultStack:
    """Start with :meth:`start`; :meth:`close` stops everything it started, by pid."""

    def __init__(self, limits: dict[str, Any], job_delay_s: float = 0.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="veil-faults-"))
        self.dir.chmod(0o755)
        ports = free_ports(paired=4, plain=2)
        self.s3_ports, (self.redis_port, self.pg_port) = ports[:4], ports[4:]
        self.limits = limits
        self.job_delay_s = job_delay_s
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.settings = Settings(
            env="test",
            db=DatabaseSettings(url=f"postgresql://postgres@127.0.0.1:{self.pg_port}/veil"),
            broker=BrokerSettings(url=f"redis://127.0.0.1:{self.redis_port}/0",
                                  result_url=f"redis://127.0.0.1:{self.redis_port}/1",
                                  queue_prefix="veil-faults"),
            s3=S3Settings(endpoint=f"127.0.0.1:{self.s3_ports[0]}"),
            stack=StackSettings(state_dir=self.dir / "state", s3_port=self.s3_ports[0],
                                master_port=self.s3_ports[1], volume_port=self.s3_ports[2],
                                filer_port=self.s3_ports[3]),
            limits=LimitSettings(**limits))

    # --- environment for Veil processes --------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
        env.update({
            "VEIL_ENV": "test", "VEIL_DB__URL": s.db.url, "VEIL_BROKER__URL": s.broker.url,
            "VEIL_BROKER__RESULT_URL": s.broker.result_url,
            "VEIL_BROKER__QUEUE_PREFIX": s.broker.queue_prefix, "VEIL_S3__ENDPOINT": s.s3.endpoint,
            "VEIL_STACK__STATE_DIR": str(s.stack.state_dir),
            "VEIL_STACK__S3_PORT": str(s.stack.s3_port),
            "VEIL_STACK__MASTER_PORT": str(s.stack.master_port),
            "VEIL_STACK__VOLUME_PORT": str(s.stack.volume_port),
            "VEIL_STACK__FILER_PORT": str(s.stack.filer_port),
            "VEIL_TEST_JOB_DELAY_S": str(self.job_delay_s),
            **{f"VEIL_LIMITS__{k.upper()}": str(v) for k, v in self.limits.items()},
        })
        env.update(extra)
        return env

    # --- services ---------------------------------------------------------------------------------

    def start(self) -> None:
        (self.dir / "logs").mkdir()
        self.start_redis()
        self._init_postgres()
        self.start_postgres()
        stack.stack_up(self.settings, echo=lambda m: None)  # S3 on its ports, db, migrations

    def start_redis(self) -> None:
        self._spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind",
                              "127.0.0.1", "--save", "", "--appendonly", "no",
                              "--dir", str(self.dir)])
        self._wait(lambda: redis.Redis(port=self.redis_port).ping(), "redis")

    def _pg_user(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        return {"user": "postgres", "group": pwd.getpwnam("postgres").pw_gid}

    def _init_postgres(self) -> None:
        data = self.dir / "pg"
        data.mkdir()
        (self.dir / "pgsock").mkdir()
        if os.geteuid() == 0:
            for path in (data, self.dir / "pgsock"):
                shutil.chown(path, "postgres", "postgres")
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, capture_output=True, **self._pg_user())

    def start_postgres(self) -> None:
        self._spawn("postgres", [str(PG_BIN / "postgres"), "-D", str(self.dir / "pg"), "-p",
                                 str(self.pg_port), "-k", str(self.dir / "pgsock"),
                                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                    **self._pg_user())
        self._wait(lambda: psycopg.connect(self.settings.db.url.rsplit("/", 1)[0] + "/postgres",
                                           connect_timeout=2).close(), "postgres")

    def stop_postgres(self) -> None:
        """A fast shutdown (SIGINT): running transactions are rolled back, clients cut off."""
        self.stop("postgres", signal.SIGINT)

    def kill_s3(self) -> None:
        pid = stack._weed_pid(self.settings)
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
            _wait_gone(pid)

    def start_s3(self) -> None:
        stack.stack_up(self.settings, echo=lambda m: None)

    # --- Veil processes ---------------------------------------------------------------------------

    def start_worker(self, name: str, concurrency: int = 2) -> None:
        self._spawn(name, [VEIL, "worker", "--concurrency", str(concurrency), "--loglevel",
                           "INFO", "--without-gossip", "--without-mingle", "-n",
                           f"{name}@%h"], env=self.env())

    def start_beat(self) -> None:
        self._spawn("beat", [VEIL, "beat", "--loglevel", "INFO"], env=self.env())

    def children(self, name: str) -> list[int]:
        """Pool children of a worker (their pids are in the jobs' ``worker`` column)."""
        proc = self.procs[name]
        path = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        try:
            return [int(p) for p in path.read_text().split()]
        except OSError:
            return []

    # --- plumbing ---------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None,
               **kwargs: Any) -> None:
        log = (self.dir / "logs" / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=log, cwd=REPO,
                                            env=env or os.environ.copy(),
                                            start_new_session=True, **kwargs)
        log.close()

    def _wait(self, probe: Any, name: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                probe()
                return
            except Exception:
                if time.monotonic() > deadline or self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} did not start:\n{self.log_tail(name)}") from None
                time.sleep(0.2)

    def stop(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self, keep: bool = False) -> None:
        for name in [n for n in self.procs if n not in ("postgres", "redis")]:
            self.stop(name)
        self.kill_s3()
        self.stop_postgres()
        self.stop("redis")
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def _wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
