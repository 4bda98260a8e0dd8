"""Hands-off ingestion end to end: an S3 client uploads N images and M videos into two cameras'
prefixes of the inbox while `veil watch` and a real `veil worker` run; reported: all redacted,
inbox empty, upload-to-redacted latency p50/p95, images per second. Then the same run with the
watcher SIGKILLed twice mid-way (restarted each time): nothing lost, nothing doubled.

Runs against the local stack (`veil stack up` first) with a database, Redis databases and queue
prefix of its own (set VEIL_BROKER__URL to move the Redis database); the watcher sees only its
own inbox prefix; everything written is deleted at the end and the database dropped.

    python -m bench.watch --data DATA            # DATA/faces-dev, plates-dev, videos
    python -m bench.watch --images 300 --videos 2

Inputs are the data set's files cycled; a repeat gets a few unique bytes after its end (after
the JPEG EOI or the MP4's last box, which decoders skip) so that each upload is its own source.
Without --data, images are generated.
"""

from __future__ import annotations

import os

os.environ.setdefault("VEIL_BROKER__URL", "redis://127.0.0.1:6379/13")
os.environ.update({
    "VEIL_DB__URL": "postgresql://postgres@127.0.0.1:5432/veil_bench_watch",
    "VEIL_BROKER__QUEUE_PREFIX": "veil-bench-watch",
    "VEIL_LIMITS__RELAY_GRACE_S": "0",
    "VEIL_WATCH__POLL_S": "1",
})

import argparse  # noqa: E402
import hashlib  # noqa: E402
import io  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import psycopg  # noqa: E402
import redis  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

from infra.db import apply_migrations  # noqa: E402
from infra.objectstore import client_for, delete_all_versions, list_all_versions  # noqa: E402
from infra.settings import get_settings  # noqa: E402

VEIL = str(Path(sys.executable).parent / "veil")
STATE = Path(".state")


def inputs(data: Path | None, images: int, videos: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) for the run: the data set's files cycled, each made unique."""
    if data is None:
        return [(f"gen-{i:05d}.jpg", _generated(i)) for i in range(images)]
    pictures = sorted([*(data / "faces-dev" / "images").glob("*.jpg"),
                       *(data / "plates-dev" / "images").glob("*.jpg")])
    clips = sorted(p for p in (data / "videos").glob("*.mp4") if "preview" in p.name) or \
        sorted((data / "videos").glob("*.mp4"))
    out = [(f"img-{i:05d}.jpg", pictures[i % len(pictures)].read_bytes() + _tag(i))
           for i in range(images)]
    out += [(f"vid-{i:03d}.mp4", clips[i % len(clips)].read_bytes() + _tag(i, video=True))
            for i in range(videos)]
    return out


def _tag(i: int, video: bool = False) -> bytes:
    if not video:
        return f"veil-bench-{i}-{uuid.uuid4().hex}".encode()
    payload = f"veil-bench-{i}-{uuid.uuid4().hex}".encode()
    return (8 + len(payload)).to_bytes(4, "big") + b"free" + payload  # an MP4 `free` box


def _generated(i: int) -> bytes:
    import cv2
    import numpy as np
    rng = np.random.default_rng(i)
    img = rng.integers(0, 255, size=(360, 480, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _sql(sql: str, *params: object) -> list[dict[str, object]]:
    with psycopg.connect(get_settings().db.url, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def _fresh_database() -> None:
    url = get_settings().db.url
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    apply_migrations(get_settings())


def _start(args: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
    out = open(STATE / log, "ab")  # noqa: SIM115
    return subprocess.Popen([VEIL, *args], env={**os.environ, **env}, stdout=out, stderr=out,
                            start_new_session=True)


def run(files: list[tuple[str, bytes]], kills: int, concurrency: int) -> dict[str, object]:
    """One run: upload everything while the watcher and a worker run; wait; measure."""
    settings = get_settings()
    _fresh_database()
    redis.Redis.from_url(settings.broker.url).flushdb()
    prefix = f"bench-watch-{uuid.uuid4().hex[:8]}/"
    env = {"VEIL_WATCH__PREFIX": prefix}
    worker = _start(["worker", "--concurrency", str(concurrency), "--without-gossip",
                     "--without-mingle"], env, "bench-watch-worker.log")
    watcher = _start(["watch"], env, "bench-watch.log")
    time.sleep(3.0)
    client = client_for("admin", settings)
    uploaded: dict[str, float] = {}  # key -> upload finished (epoch s)

    def put(index: int) -> None:
        name, data = files[index]
        key = f"{prefix}{'gate-north' if index % 2 else 'gate-south'}/{name}"
        client.put_object(settings.s3.bucket_inbox, key, io.BytesIO(data), len(data))
        uploaded[key] = time.time()

    started = time.time()
    killed = 0
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(len(files))))
    upload_s = time.time() - started
    total = len(files)
    while True:  # kill the watcher at 1/3 and 2/3 of the uploads ingested, then restart it
        done = int(_sql("SELECT count(*) AS n FROM inbox_objects")[0]["n"])  # type: ignore[call-overload]
        if killed < kills and done >= total * (killed + 1) / (kills + 1):
            os.killpg(watcher.pid, signal.SIGKILL)
            watcher.wait()
            killed += 1
            watcher = _start(["watch"], env, "bench-watch.log")
        if done >= total and _finished() >= total:
            break
        if time.time() - started > 7200:
            break
        time.sleep(0.5)
    finished = time.time()
    figures = _figures(prefix, uploaded, RunTimes(started, finished, upload_s), total, killed)
    for proc in (watcher, worker):
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=120)
    _cleanup(prefix)
    return figures


def _finished() -> int:
    return int(_sql(  # type: ignore[call-overload]
        "SELECT count(*) AS n FROM (SELECT DISTINCT ON (source_id) state FROM jobs ORDER BY"
        " source_id, (kind = 'assemble') DESC, chunk_index) j WHERE state IN"
        " ('succeeded', 'failed', 'cancelled')")[0]["n"])


@dataclass(frozen=True)
class RunTimes:
    """When the run started and finished, and how long its uploads took (seconds)."""

    started: float
    finished: float
    upload_s: float


def _figures(prefix: str, uploaded: dict[str, float], times: RunTimes, total: int,
             killed: int) -> dict[str, object]:
    started, finished, upload_s = times.started, times.finished, times.upload_s
    settings = get_settings()
    digests = {hashlib.sha256(k.encode()).hexdigest(): k for k in uploaded}
    rows = _sql("SELECT i.key_sha256, i.outcome, s.kind, a.created_at FROM inbox_objects i"
                " JOIN sources s ON s.id = i.source_id LEFT JOIN artifacts a ON"
                " a.source_id = s.id AND a.stage = 'redact'")
    latencies = sorted(a.timestamp() - uploaded[digests[str(r["key_sha256"])]]  # type: ignore[attr-defined]
                       for r in rows if (a := r["created_at"]) is not None)
    images = [r for r in rows if r["kind"] == "image" and r["created_at"] is not None]
    last_image = max((r["created_at"] for r in images), default=None)  # type: ignore[type-var]
    doubled = _sql("SELECT count(*) AS n FROM (SELECT source_id FROM inbox_objects GROUP BY"
                   " source_id HAVING count(*) > 1) d")[0]["n"]
    jobs_twice = _sql("SELECT count(*) AS n FROM outbox o JOIN jobs j ON j.id = o.job_id"
                      " GROUP BY o.job_id HAVING count(*) > 1")
    left = list_all_versions(client_for("admin", settings), settings.s3.bucket_inbox, prefix)
    return {
        "uploads": total, "watcher_sigkills": killed, "upload_s": round(upload_s, 1),
        "sources": int(_sql("SELECT count(*) AS n FROM sources")[0]["n"]),  # type: ignore[call-overload]
        "redacted": len(latencies),
        "failed": int(_sql("SELECT count(*) AS n FROM jobs WHERE state = 'failed'")[0]["n"]),  # type: ignore[call-overload]
        "outcomes": sorted({str(r["outcome"]) for r in rows}),
        "sources_with_two_uploads": doubled, "jobs_with_two_outbox_rows": len(jobs_twice),
        "inbox_left": len(left),
        "latency_p50_s": round(statistics.median(latencies), 2) if latencies else None,
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2)
        if latencies else None,
        "images_per_s": round(len(images) / (last_image.timestamp() - started), 2)  # type: ignore[union-attr,attr-defined]
        if last_image else None,
        "wall_s": round(finished - started, 1),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _cleanup(prefix: str) -> None:
    settings = get_settings()
    client = client_for("admin", settings)
    for bucket, key in [(r["raw_bucket"], r["raw_key"]) for r in _sql(
            "SELECT raw_bucket, raw_key FROM sources")] + [(r["bucket"], r["key"]) for r in _sql(
            "SELECT bucket, key FROM artifacts")]:
        delete_all_versions(client, str(bucket), str(key))
    for key, version in list_all_versions(client, settings.s3.bucket_inbox, prefix):
        client.remove_object(settings.s3.bucket_inbox, key, version_id=version)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="the evaluation data folder")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--kills", type=int, default=2, help="watcher SIGKILLs in run two")
    args = parser.parse_args()
    STATE.mkdir(exist_ok=True)
    files = inputs(args.data, args.images, args.videos)
    print(f"{args.images} images + {args.videos} videos, worker concurrency {args.concurrency}")
    for kills in (0, args.kills):
        figures = run(files if kills == 0 else _retagged(files), kills, args.concurrency)
        print(("plain run:  " if kills == 0 else f"{kills} kills:    ")
              + "  ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
    url = get_settings().db.url
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def _retagged(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Fresh bytes for the second run (its own sources, not duplicates of the first's)."""
    return [(name, data + _tag(i, video=name.endswith(".mp4")))
            for i, (name, data) in enumerate(files)]


if __name__ == "__main__":
    main()
