"""Peak resident memory of one image at the pixel limit, in `veil redact -j 1` and in a worker.

Generates an ~8900x8900 PNG (79 MP, just under the default 80 MP limit; a few hundred KB on
disk) with a few faces drawn from the suite's synthetic face, then measures:

* ``redact``: `veil redact -j 1 FILE -o OUT` as a child process; its peak RSS is the kernel's
  ``ru_maxrss`` from ``wait4`` (the image is redacted in that process when ``-j 1``);
* ``worker``: one `veil worker --concurrency 1` (prefork, one pool child), the file ingested and
  waited for; the pool child's peak RSS is its ``VmHWM``, read before the worker stops, and its
  RSS a few seconds after the job (what it keeps).

Runs against the local stack (`veil stack up` first) with a database, Redis db and queue prefix
of its own; every object it writes is deleted at the end (all versions) and its database dropped.

    python -m bench.memory_image [--side 8900] [--format png|jpg] [--only redact|worker]
"""

from __future__ import annotations

import os

os.environ.update({
    "VEIL_DB__URL": os.environ.get("VEIL_BENCH_DB",
                                   "postgresql://postgres@127.0.0.1:5432/veil_bench_memory"),
    "VEIL_BROKER__URL": os.environ.get("VEIL_BENCH_REDIS", "redis://127.0.0.1:6379/3"),
    "VEIL_BROKER__QUEUE_PREFIX": "veil-bench-memory",
    "VEIL_LIMITS__RELAY_GRACE_S": "0",
})

import argparse  # noqa: E402
import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import redis  # noqa: E402

from bench.throughput_pipeline import _cleanup, _fresh_database  # noqa: E402
from infra.broker import make_celery  # noqa: E402
from infra.db import apply_migrations  # noqa: E402
from infra.policies import get_policy  # noqa: E402
from infra.settings import get_settings  # noqa: E402
from producer.ingest import IngestOptions, collect_inputs, ingest, wait_for  # noqa: E402

VEIL = str(Path(sys.executable).parent / "veil")


def make_image(path: Path, side: int) -> None:
    """A mostly flat picture (it compresses to a few hundred KB) with a few face-like blobs."""
    frame = np.full((side, side, 3), (90, 120, 140), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(200, side - 600, 2))
        size = int(rng.integers(120, 400))
        cv2.ellipse(frame, (x + size // 2, y + size // 2), (size // 3, size // 2), 0, 0, 360,
                    (150, 180, 225), -1)
        for dx in (-size // 7, size // 7):  # eyes and mouth: enough for a face-ish pattern
            cv2.circle(frame, (x + size // 2 + dx, y + size * 2 // 5), max(2, size // 20),
                       (40, 40, 40), -1)
        cv2.ellipse(frame, (x + size // 2, y + size * 7 // 10), (size // 7, size // 20), 0, 0,
                    360, (60, 60, 150), -1)
    params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if path.suffix == ".png" else []
    if not cv2.imwrite(str(path), frame, params):
        raise SystemExit(f"could not write the test image {path.name}")


def measure_redact(image: Path, out: Path) -> dict[str, object]:
    started = time.monotonic()
    proc = subprocess.Popen([VEIL, "redact", "-j", "1", "--json", str(image), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    files = json.loads(output)["files"] if output.strip() else []
    return {"exit_code": proc.returncode, "seconds": round(time.monotonic() - started, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "error": files[0]["error"] if files else "no output"}


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure_worker(image: Path) -> dict[str, object]:
    settings = get_settings()
    _fresh_database(settings.db.url)
    apply_migrations(settings)
    redis.Redis.from_url(settings.broker.url).flushdb()
    log = open(image.parent / "worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen([VEIL, "worker", "--concurrency", "1", "--loglevel", "WARNING",
                               "--without-gossip", "--without-mingle"],
                              stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (children := _children(worker.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3.0)  # the child has imported the task modules
        idle_kib = _status_kib(children[0], "VmRSS") if children else 0
        started = time.monotonic()
        results = ingest(collect_inputs([str(image)], settings),
                         IngestOptions(policy=get_policy(None, settings)), settings,
                         make_celery(settings))
        ids = [r.source_id for r in results if r.source_id]
        states = wait_for(ids, settings, timeout_s=900)
        seconds = time.monotonic() - started
        time.sleep(5.0)
        children = _children(worker.pid)
        child = children[0] if children else None
        return {"state": [s for s, _ in states.values()],
                "error": [e for _, e in states.values() if e],
                "seconds": round(seconds, 1),
                "pool_child_idle_rss_mb": round(idle_kib / 1024, 1),
                "pool_child_peak_rss_mb": round(_status_kib(child, "VmHWM") / 1024, 1)
                if child else None,
                "pool_child_rss_after_mb": round(_status_kib(child, "VmRSS") / 1024, 1)
                if child else None}
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        _cleanup(settings.db.url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=8900)
    parser.add_argument("--only", choices=("redact", "worker"))
    parser.add_argument("--format", choices=("png", "jpg"), default="png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="veil-memory-bench-") as work:
        image = Path(work) / f"large.{args.format}"
        make_image(image, args.side)
        report: dict[str, object] = {
            "image": f"{args.side}x{args.side} {args.format.upper()}, "
                     f"{args.side ** 2 / 1e6:.1f} MP, {image.stat().st_size // 1024} KB",
            "max_image_pixels": get_settings().limits.max_image_pixels}
        if args.only in (None, "redact"):
            report["veil_redact_j1"] = measure_redact(image, Path(work) / "out")
        if args.only in (None, "worker"):
            report["worker"] = measure_worker(image)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
