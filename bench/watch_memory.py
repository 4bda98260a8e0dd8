"""Peak memory of `veil watch` ingesting one large inbox video, for several sizes: the growth
should stay flat (multipart buffers), not follow the object's size.

Each size is one object (an MP4 header and random bytes: Veil cannot decode it, which is beside
the point, the bytes take the same path) uploaded to a private inbox prefix, then ingested by
the watcher's object handler in a fresh subprocess that reports VmRSS before and VmHWM after.
Uses the local stack and its own database (dropped at the end); deletes what it wrote.

    python -m bench.watch_memory --sizes-mb 50 200 500
"""

from __future__ import annotations

import os

os.environ.update({
    "VEIL_DB__URL": "postgresql://postgres@127.0.0.1:5432/veil_bench_watch_memory",
    "VEIL_BROKER__QUEUE_PREFIX": "veil-bench-watch-memory",
})

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402

import psycopg  # noqa: E402

from infra.db import apply_migrations  # noqa: E402
from infra.objectstore import client_for, delete_all_versions, list_all_versions  # noqa: E402
from infra.settings import get_settings  # noqa: E402

MEASURE = """
import json
from infra.broker import make_celery
from infra.objectstore import client_for
from infra.settings import get_settings
from producer.cameras import CameraBook
from producer.watch_inbox import handle_object, list_inbox

def kb(field):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field))

settings = get_settings()
client = client_for("producer", settings)
[obj] = list(list_inbox(client, settings.s3.bucket_inbox, settings.watch.prefix))
app, book = make_celery(settings, name="veil-bench"), CameraBook(settings)
open("/proc/self/clear_refs", "w").write("5")
before = kb("VmRSS:")
handled = handle_object(obj, settings, app, book, client)
print(json.dumps({"outcome": handled.outcome, "growth_mb": (kb("VmHWM:") - before) / 1024}))
"""


class _Random:
    """A readable stream of ``size`` bytes, an MP4 header first, made 1 MiB at a time."""

    def __init__(self, size: int) -> None:
        self.left, self.head = size, b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out, self.head = (self.head + os.urandom(max(n - len(self.head), 0)))[:n], b""
        self.left -= len(out)
        return out


def measure(size_mb: int) -> dict[str, object]:
    settings = get_settings()
    admin = client_for("admin", settings)
    prefix = f"bench-mem-{uuid.uuid4().hex[:8]}/"
    admin.put_object(settings.s3.bucket_inbox, f"{prefix}cam/long.mp4",
                     _Random(size_mb * 2**20), size_mb * 2**20)  # type: ignore[arg-type]
    run = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True,
                         env={**os.environ, "VEIL_WATCH__PREFIX": prefix}, timeout=3600)
    for key, version in list_all_versions(admin, settings.s3.bucket_inbox, prefix):
        admin.remove_object(settings.s3.bucket_inbox, key, version_id=version)
    if run.returncode != 0:
        raise SystemExit(run.stderr)
    return {"size_mb": size_mb, **json.loads(run.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[50, 200, 500])
    args = parser.parse_args()
    url = get_settings().db.url
    admin_url, name = url.rsplit("/", 1)[0] + "/postgres", url.rsplit("/", 1)[1]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    apply_migrations(get_settings())
    try:
        for size in args.sizes_mb:
            result = measure(size)
            print(f"{result['size_mb']:>5} MB object: peak RSS growth "
                  f"{result['growth_mb']:.1f} MB ({result['outcome']})", flush=True)
    finally:
        client = client_for("admin", get_settings())
        with psycopg.connect(url) as conn:
            rows = conn.execute("SELECT raw_bucket, raw_key FROM sources").fetchall()
        for bucket, key in rows:
            delete_all_versions(client, bucket, key)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
