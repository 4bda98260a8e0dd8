"""The README cannot drift from the CLI: every `veil` command its code blocks show runs here.

The commands are read from the README's own ``sh`` code blocks, in order, so a command added to
or changed in the README is tested as written. Placeholders (``SOURCE_ID``, ``photos/``,
``out/``...) are replaced by real things made for them; an unknown placeholder fails the test
instead of being passed through. Each command runs as a user types it (text mode) and, when its
``--help`` offers ``--json``, again with ``--json``: the exit code must be the documented one (0
here: every input is good and a real worker runs), nothing may print a traceback, and ``--json``
must print JSON. Long-running commands (``worker``, ``beat``, ``flower``, ``metrics --serve``)
must still be running and silent about errors after a few seconds; then they are stopped
(``veil watch`` sees only the suite's own inbox prefix, VEIL_WATCH__PREFIX in conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from infra.settings import Settings
from tests.conftest import REPO, face_image, jpeg_bytes

VEIL = str(Path(sys.executable).parent / "veil")
README = REPO / "README.md"
LONG_RUNNING = ("veil worker", "veil beat", "veil flower", "veil metrics --serve", "veil watch")
# Commands not run here, each with where it is run instead. Every entry must still be in the
# README (a test below), so the list cannot go stale.
NOT_RUN_HERE = {
    "veil stack down": "would stop the S3 server the rest of the suite uses; the wheel smoke "
                       "(tests/smoke_wheel.py, make smoke) runs it against its private stack",
}
PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]{1,}\b(?:\.\.\.)?")


def readme_commands(text: str) -> list[str]:
    """The ``veil`` lines of the README's sh code blocks, without comments or a trailing ``&``."""
    commands, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside and line.strip() in ("```sh", "```bash", "```shell")
            continue
        if not inside:
            continue
        line = re.sub(r"\s+#.*$", "", line).strip().removesuffix("&").strip()
        if line.startswith("veil "):
            commands.extend(_variants(line))
    return commands


def _variants(command: str) -> list[str]:
    """``veil x [--a A] [--b]`` is run bare and with every optional part."""
    if "[" not in command:
        return [command]
    bare = re.sub(r"\s*\[[^\]]*\]", "", command)
    full = re.sub(r"\[([^\]]*)\]", r"\1", command)
    return [bare, full]


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Things:
    """The real inputs and ids that stand in for the README's placeholders."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.settings, self.root, self.count = settings, root, 0

    def _name(self) -> str:
        self.count += 1
        return f"r{self.count}-{uuid.uuid4().hex[:6]}"

    def photos(self) -> str:
        folder = self.root / self._name()
        folder.mkdir()
        for i in range(2):
            (folder / f"photo-{i}.jpg").write_bytes(jpeg_bytes(face_image(_seed(), 160)))
        return str(folder)

    def photo(self) -> str:
        path = self.root / f"{self._name()}.jpg"
        path.write_bytes(jpeg_bytes(face_image(_seed(), 160)))
        return str(path)

    def out_dir(self) -> str:
        return str(self.root / self._name())

    def out_file(self, suffix: str) -> str:
        return str(self.root / f"{self._name()}{suffix}")

    def source_id(self) -> str:
        """A new source with a redacted output, ingested through the real pipeline."""
        run = _veil("ingest", self.photo(), "--wait", "--json")
        assert run.returncode == 0, run.stdout + run.stderr
        return str(json.loads(run.stdout)["sources"][0]["source_id"])

    def inbox_prefix(self) -> str:
        from infra.objectstore import client_for, put_bytes
        prefix = f"readme-{self._name()}"
        put_bytes(client_for("admin", self.settings), self.settings.s3.bucket_inbox,
                  f"{prefix}/cam1/a.jpg", jpeg_bytes(face_image(_seed(), 160)), "image/jpeg")
        return f"s3://{self.settings.s3.bucket_inbox}/{prefix}"


def _seed() -> int:
    return uuid.uuid4().int & 0x7FFFFFFF


def substitutions(things: Things) -> list[tuple[re.Pattern[str], Callable[[], str]]]:
    """README placeholder -> a maker of the real thing (a fresh one per use)."""
    table: list[tuple[str, Callable[[], str]]] = [
        (r"SOURCE_ID(\.\.\.)?", things.source_id),
        (r"--source ID\b", lambda: f"--source {things.source_id()}"),
        (r"--since TIME\b", lambda: "--since 2024-01-01T00:00Z"),
        (r"s3://veil-inbox/prefix", things.inbox_prefix),
        (r"(?<![\w/])(photos|clips|dir)/", things.photos),
        (r"(?<![\w/])a\.jpg\b", things.photo),
        (r"(?<![\w/])out/", things.out_dir),
        (r"(?<![\w/])request\.zip\b", lambda: things.out_file(".zip")),
        (r"(?<![\w/])report\.html\b", lambda: things.out_file(".html")),
        (r"--serve \d+", lambda: f"--serve {_free_port()}"),
        (r"(?<=consent add )REF\b", lambda: f"readme-{uuid.uuid4().hex[:10]}"),
    ]
    return [(re.compile(p), make) for p, make in table]


def fill(command: str, things: Things) -> list[str]:
    for pattern, make in substitutions(things):
        command = pattern.sub(lambda _m, make=make: make(), command)  # type: ignore[misc]
    unknown = [m for m in PLACEHOLDER.findall(command) if m not in ("UTC",)]
    assert not unknown, (f"README placeholder(s) {unknown} in {command!r} have no stand-in: "
                         "add one to substitutions()")
    return shlex.split(command)


def _env() -> dict[str, str]:
    return {**os.environ, "VEIL_STACK__FLOWER_PORT": str(_free_port()), "COLUMNS": "120"}


def _veil(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VEIL, *args], capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=REPO)


def _offers_json(args: list[str]) -> bool:
    words = [a for a in args[1:] if not a.startswith("-")][:2]
    for depth in range(len(words), 0, -1):
        run = _veil(*words[:depth], "--help")
        if run.returncode == 0:
            return "--json" in run.stdout
    return False


def _run_long(args: list[str]) -> str:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=REPO, start_new_session=True)
    try:
        time.sleep(6)
        alive = proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
    assert alive, f"{args} exited with {proc.returncode}:\n{out[-800:]}\n{err[-800:]}"
    assert "Traceback" not in out + err, err[-1500:]
    return err


@pytest.fixture(scope="module")
def things(services: Settings, worker: object, retention_worker: object,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Things]:
    # the README starts both `veil worker` and `veil worker --retention` (erasure, purge)
    yield Things(services, tmp_path_factory.mktemp("readme"))


def test_the_readme_shows_commands_and_what_it_does_not_run_is_still_there() -> None:
    assert len(COMMANDS) >= 10, COMMANDS
    for command in NOT_RUN_HERE:
        assert command in COMMANDS, f"{command!r} is no longer in the README: drop it here"


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_in_text_and_json_mode(command: str, things: Things) -> None:
    if command in NOT_RUN_HERE:
        return  # see NOT_RUN_HERE for where it runs; the test above keeps the entry honest
    args = fill(command, things)
    if command.startswith(LONG_RUNNING) and "--once" not in args:
        _run_long([VEIL, *args[1:]])
        return
    # when the user types it as written
    text = _veil(*args[1:])
    # then it exits 0 and prints no traceback
    assert text.returncode == 0, f"{args}: exit {text.returncode}\n{text.stdout}\n{text.stderr}"
    assert "Traceback" not in text.stdout + text.stderr, text.stderr
    if not _offers_json(args) or "--json" in args:
        return
    # and with --json (fresh stand-ins, so a command that changes state acts on new things)
    again = fill(command, things)
    run = _veil(*again[1:], "--json")
    assert run.returncode == 0, f"{again} --json: exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    assert "Traceback" not in run.stdout + run.stderr, run.stderr
    json.loads(run.stdout)
