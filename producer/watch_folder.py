"""`veil watch PATH`: ingest NVR export folders as files land in them (``watchdog``).

A file is ingested once it is complete: its size and modification time unchanged for
``VEIL_WATCH__STABLE_S`` seconds (an NVR writes a long export for minutes). Temporary names
(``*.part``, ``*.tmp``, ``*.partial``, ``*.crdownload``, ``*~``) and dotfiles or dot-folders
are never touched: exporters write under such a name and rename when done, which watchdog
reports as a move. After ingest the file is deleted or moved under ``--after move:DIR``
(keeping its relative path); a file that failed to ingest stays where it is and is reported.
The first folder under PATH names the camera, as the first key segment does in the inbox.

Files already there when the watcher starts are picked up by a scan; watchdog events then
only speed things up, and a poll of the candidates decides.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from celery import Celery
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from infra.settings import Settings
from producer.cameras import CameraBook, CameraRefused
from producer.ingest import IngestOptions, IngestResult, InputItem, ingest

log = logging.getLogger(__name__)
TEMPORARY_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".swp", "~")


def is_temporary(path: Path, root: Path) -> bool:
    """True for names an exporter is still writing, and for anything hidden."""
    parts = path.relative_to(root).parts
    return any(p.startswith(".") for p in parts) or path.name.lower().endswith(TEMPORARY_SUFFIXES)


@dataclass
class _Candidate:
    size: int
    mtime_ns: int
    since: float


class _Events(FileSystemEventHandler):
    def __init__(self, note: Callable[[Path], None]) -> None:
        self._note = note

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        target = getattr(event, "dest_path", "") or event.src_path
        self._note(Path(str(target)))


class FolderWatcher:
    def __init__(self, root: Path, settings: Settings, app: Celery, book: CameraBook,
                 after: str = "delete", echo: Callable[[str], None] = lambda line: None) -> None:
        self.root, self.settings, self.app, self.book, self.echo = root, settings, app, book, echo
        self.move_to = Path(after.removeprefix("move:")) if after.startswith("move:") else None
        self.stable_s = settings.watch.stable_s
        self.results: list[tuple[Path, IngestResult | None, str | None]] = []
        self._candidates: dict[Path, _Candidate] = {}
        self._refused: dict[Path, int] = {}  # refused files, by mtime: retried once changed
        self._lock = threading.Lock()

    def note(self, path: Path) -> None:
        """A file appeared or changed: (re)start its stability clock."""
        try:
            if not path.is_file() or is_temporary(path, self.root):
                return
            stat = path.stat()
        except (OSError, ValueError):
            return
        if self._refused.get(path) == stat.st_mtime_ns:
            return
        with self._lock:
            known = self._candidates.get(path)
            if known is None or (known.size, known.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._candidates[path] = _Candidate(stat.st_size, stat.st_mtime_ns,
                                                    time.monotonic())

    def scan(self) -> None:
        for path in sorted(self.root.rglob("*")):
            self.note(path)

    def poll(self) -> int:
        """Ingest every candidate stable for long enough; returns how many are still waiting."""
        now = time.monotonic()
        with self._lock:
            paths = list(self._candidates)
        for path in paths:
            self.note(path)  # a size or time change restarts the clock
            with self._lock:
                candidate = self._candidates.get(path)
            if candidate is None or now - candidate.since < self.stable_s:
                continue
            with self._lock:
                self._candidates.pop(path, None)
            if path.exists():
                self._ingest(path)
        with self._lock:
            return len(self._candidates)

    def run(self, stop: Callable[[], bool] = lambda: False, once: bool = False) -> None:
        """Watch until ``stop()``; with ``once``, until every file found at start is handled."""
        observer = Observer()
        observer.schedule(_Events(self.note), str(self.root), recursive=True)
        observer.start()
        try:
            self.scan()
            while not stop():
                if self.poll() == 0 and once:
                    return
                time.sleep(min(0.5, max(self.stable_s / 4, 0.05)))
        finally:
            observer.stop()
            observer.join(timeout=10)

    def _ingest(self, path: Path) -> None:
        relative = path.relative_to(self.root).as_posix()
        try:
            camera = self.book.for_key(relative)
        except CameraRefused as exc:
            self._refused[path] = path.stat().st_mtime_ns
            self.results.append((path, None, str(exc)))
            self.echo(f"refused: {relative}: {exc}")
            return
        options = IngestOptions(policy=camera.policy, camera=camera.name,
                                camera_tz=camera.timezone, capture_from=camera.capture_time,
                                captured_at=_mtime(path))
        item = InputItem(name=path.name, read=path.read_bytes, origin="folder",
                         size=path.stat().st_size, spool=_spool(path)
                         if path.stat().st_size > self.settings.watch.spool_above_bytes else None)
        result = ingest([item], options, self.settings, self.app)[0]
        self.results.append((path, result, result.error))
        if result.state == "rejected":
            self.echo(f"rejected: {relative}: {result.error}")
            return
        if result.duplicate:
            self.echo(f"duplicate: {relative} holds the bytes of source {result.source_id}")
        self._after(path, relative)

    def _after(self, path: Path, relative: str) -> None:
        if self.move_to is None:
            path.unlink(missing_ok=True)
            return
        target = self.move_to / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(target))


def _mtime(path: Path):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


def _spool(path: Path) -> Callable[[], tuple[BinaryIO, str]]:
    """A large local file is its own spool: hashed in 1 MiB reads, then read segment-wise."""
    def open_hashed() -> tuple[BinaryIO, str]:
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(1024 * 1024):
                digest.update(chunk)
        return path.open("rb"), digest.hexdigest()
    return open_hashed
