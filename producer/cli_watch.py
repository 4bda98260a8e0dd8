"""`veil watch`: hands-off ingestion from the inbox bucket, or from an NVR export folder."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import click

from producer.cli_common import EXIT_FAILED, EXIT_USAGE, emit, load_settings, service_errors


def _after(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value == "delete" or (value.startswith("move:") and len(value) > 5):
        return value
    raise click.BadParameter("use delete or move:DIR")


@click.command()
@click.argument("path", required=False, type=click.Path(exists=True, file_okay=False,
                                                         path_type=Path))
@click.option("--once", is_flag=True, help="Ingest what is there now, then exit.")
@click.option("--after", default="delete", show_default=True, callback=_after,
              help="Folder watch: what becomes of an ingested file (delete, or move:DIR).")
@click.option("--metrics-port", type=int, help="Serve Prometheus /metrics on this port.")
@click.option("--metrics-address", default="127.0.0.1", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="With --once: one JSON summary.")
def watch(path: Path | None, once: bool, after: str, metrics_port: int | None,
          metrics_address: str, as_json: bool) -> None:
    """Ingest every upload to the inbox bucket as it arrives (or every file in PATH).

    Uploads go to veil-inbox/<camera>/...; the cameras file (VEIL_CAMERAS_FILE) gives each
    camera its policy, time zone and capture-time source. Each object version becomes exactly
    one source; the same bytes under another key are reported as a duplicate; the inbox copy
    is removed once its encrypted copy is in `raw`. The watcher pauses while more than
    VEIL_WATCH__MAX_QUEUE_DEPTH jobs are queued. Exit codes: 0 done, 1 some upload was refused
    or rejected (--once), 2 bad cameras file or option, 3 a service is down.
    """
    from infra.broker import make_celery
    from producer.cameras import CameraBook, CamerasFileError
    from producer.watch_metrics import WatchMetrics
    settings = load_settings()
    try:
        book = CameraBook(settings)
    except CamerasFileError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    echo = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
    metrics = WatchMetrics()
    if metrics_port is not None:
        port = metrics.serve(metrics_port, metrics_address)
        click.echo(f"serving http://{metrics_address}:{port}/metrics", err=True)
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    with service_errors():
        app = make_celery(settings, name="veil-watch")
        if path is not None:
            _watch_folder(path, after, settings, app, book, echo, once, as_json, stopping)
            return
        from producer.watch import Watcher
        watcher = Watcher(settings, app, book, metrics, echo, stop=lambda: bool(stopping))
        if not once:
            echo(f"watching {', '.join(watcher.buckets)} ({len(book)} cameras configured)")
            watcher.run_forever()
            return
        summary = watcher.run_once()
    payload: dict[str, Any] = {"counts": dict(summary.counts), "problems": summary.problems,
                               "duplicates": summary.duplicates}
    emit(as_json, payload, lambda: [
        *(f"{p['bucket']}/{p['key']}: {p['reason']}" for p in summary.problems),
        *(f"duplicate {d['bucket']}/{d['key']} of source {d['source_id']}: removed"
          for d in summary.duplicates),
        "inbox: " + (", ".join(f"{n} {k}" for k, n in sorted(summary.counts.items()))
                     or "nothing new")])
    if summary.problems:
        sys.exit(EXIT_FAILED)


def _watch_folder(path: Path, after: str, settings: Any, app: Any, book: Any, echo: Any,
                  once: bool, as_json: bool, stopping: list[bool]) -> None:
    from producer.watch_folder import FolderWatcher
    root = path.resolve()
    if after.startswith("move:"):
        target = Path(after[5:]).resolve()
        if target == root or root in target.parents:
            raise click.BadParameter("the move folder must be outside PATH", param_hint="--after")
    watcher = FolderWatcher(root, settings, app, book, after, echo)
    if not once:
        echo(f"watching {root}")
    watcher.run(stop=lambda: bool(stopping), once=once)
    if not once:
        return
    files = [{"file": str(p.relative_to(root)), "source_id": str(r.source_id) if r and
              r.source_id else None, "state": r.state if r else "refused",
              "duplicate": bool(r and r.duplicate), "error": err}
             for p, r, err in watcher.results]
    emit(as_json, {"files": files}, lambda: [
        *(f"{f['source_id'] or '-':<36}  {f['state']:<9} {f['file']}"
          f"{' (duplicate)' if f['duplicate'] else ''}"
          f"{': ' + str(f['error']) if f['error'] else ''}" for f in files),
        f"{len(files)} files"])
    if any(f["state"] in ("rejected", "refused") for f in files):
        sys.exit(EXIT_FAILED)
