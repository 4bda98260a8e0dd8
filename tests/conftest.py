"""Shared fixtures. Integration tests use the real services of the local stack:

- PostgreSQL: a database of the suite's own (``veil_test``), dropped and re-created per session;
- Redis: its own database numbers and queue prefix, flushed per session;
- S3: the SeaweedFS server started by ``veil stack up`` (``make test`` runs it first), with the
  normal bucket names (its grants are per bucket); every object the suite writes is recorded in
  the test ledger or by the test itself and deleted, all versions, at the end.
"""

from __future__ import annotations

import os

# Test settings must be in place before any Veil module reads them. VEIL_TEST_SLOT=1..6 gives a
# suite run its own database, Redis databases and queue prefix, so that several runs on one
# machine (one per developer checkout) do not wipe each other's state.
_SLOT = os.environ.get("VEIL_TEST_SLOT", "")
if _SLOT and _SLOT not in ("1", "2", "3", "4", "5", "6"):
    raise SystemExit("VEIL_TEST_SLOT must be 1 to 6")
# slots 1-4: dbs 6-13; the default (no slot) 14-15; slots 5 and 6 take 2-5 (0-1 are production's)
_REDIS_DBS = {"": (14, 15), "5": (2, 3), "6": (4, 5)}.get(
    _SLOT, (2 * int(_SLOT or 0) + 4, 2 * int(_SLOT or 0) + 5))
os.environ.update({
    "VEIL_ENV": "test",
    "VEIL_DB__URL": f"postgresql://postgres@127.0.0.1:5432/veil_test{_SLOT}",
    "VEIL_BROKER__URL": f"redis://127.0.0.1:6379/{_REDIS_DBS[0]}",
    "VEIL_BROKER__RESULT_URL": f"redis://127.0.0.1:6379/{_REDIS_DBS[1]}",
    "VEIL_BROKER__QUEUE_PREFIX": f"veil-test{_SLOT}",
    # a `veil watch` started by a test sees only this part of the shared inbox bucket
    "VEIL_WATCH__PREFIX": f"veil-test{_SLOT}-watch/",
    "VEIL_LIMITS__MAX_IMAGE_PIXELS": "40000000",
    "VEIL_LIMITS__RELAY_GRACE_S": "0",
})

import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
import pytest  # noqa: E402
import redis  # noqa: E402

from infra.settings import DbRole, Settings, get_settings, reset_settings_cache  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def settings() -> Settings:
    reset_settings_cache()
    return get_settings()


def _recreate_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _delete_recorded_objects(settings: Settings) -> None:
    """Delete every object the ledger knows, all versions; S3 legal holds left by hold tests are
    lifted first (on buckets with object lock the server refuses to delete a held version)."""
    from infra.objectstore import client_for, delete_all_versions, set_legal_hold
    client = client_for("admin", settings)
    with psycopg.connect(settings.db.url) as conn:
        rows = conn.execute(
            "SELECT raw_bucket, raw_key FROM sources UNION SELECT bucket, key FROM artifacts"
            " UNION SELECT bucket, key FROM deletion_tasks").fetchall()
    with psycopg.connect(settings.db.url) as conn:
        held = conn.execute(
            "SELECT raw_bucket, raw_key FROM sources s JOIN legal_holds h ON h.source_id = s.id"
            " UNION SELECT bucket, key FROM deletion_tasks d JOIN legal_holds h"
            " ON h.source_id = d.source_id").fetchall()
    for bucket, key in held:
        set_legal_hold(client, bucket, key, enabled=False)
    for bucket, key in rows:
        delete_all_versions(client, bucket, key)


@pytest.fixture(scope="session")
def services(settings: Settings) -> Iterator[Settings]:
    """Real PostgreSQL (fresh test database, migrated), Redis (flushed) and S3 (buckets)."""
    from infra.db import apply_migrations
    from infra.objectstore import ensure_buckets
    from infra.stack import check_s3

    status = check_s3(settings)
    if not status.ok:
        pytest.fail(f"S3 is not running ({status.detail}); run `veil stack up` (make test does)")
    _recreate_database(settings.db.url)
    apply_migrations(settings)
    redis.Redis.from_url(settings.broker.url).flushdb()
    redis.Redis.from_url(settings.broker.result_url).flushdb()
    ensure_buckets(settings)
    yield settings
    _delete_recorded_objects(settings)


@pytest.fixture()
def clean_ledger(services: Settings) -> Settings:
    """Empty ledger tables (audit events cannot be deleted: the database is fresh per session)."""
    _delete_recorded_objects(services)
    with psycopg.connect(services.db.url) as conn:
        # CASCADE: tables added later that reference sources or jobs are emptied too
        conn.execute("TRUNCATE outbox, detections, artifacts, deletion_tasks, dead_letters,"
                     " legal_holds, jobs, sources, keyring.data_keys CASCADE")
    return services


def start_worker(concurrency: int = 1, extra_env: dict[str, str] | None = None,
                 retention: bool = False) -> subprocess.Popen[bytes]:
    """`veil worker` (as veil_worker), or `veil worker --retention` (as veil_retention)."""
    log = open(REPO / ".state" / "test-worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "veil"), "worker", "--concurrency", str(concurrency),
         *(["--retention"] if retention else []),
         "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=REPO, env={**os.environ, **(extra_env or {})}, stdout=log, stderr=log,
        start_new_session=True,
    )
    return proc


def stop_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def worker(services: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """One real Celery worker process for the session (prefork, one child)."""
    (REPO / ".state").mkdir(exist_ok=True)
    proc = start_worker()
    time.sleep(1.0)
    if proc.poll() is not None:
        pytest.fail("the test worker exited at start; see .state/test-worker.log")
    yield proc
    stop_worker(proc)


@pytest.fixture(scope="session")
def retention_worker(services: Settings) -> Iterator[subprocess.Popen[bytes]]:
    """The retention worker: purge, erasure requests and inbox clean-up, as veil_retention."""
    (REPO / ".state").mkdir(exist_ok=True)
    proc = start_worker(retention=True)
    time.sleep(1.0)
    if proc.poll() is not None:
        pytest.fail("the retention worker exited at start; see .state/test-worker.log")
    yield proc
    stop_worker(proc)


@pytest.fixture()
def as_role(services: Settings) -> Callable[[DbRole], Settings]:
    """Settings that connect to the test database as one of the runtime roles of 0008, the way
    the CLI and workers do, instead of the suite's superuser."""
    return services.for_db_role


def face_image(seed: int, size: int = 256) -> np.ndarray:
    """A real face (scikit-image's astronaut, public domain), made unique by a seeded border so
    each test's bytes, and so its raw key, are its own."""
    import cv2
    from skimage import data

    rgb = data.astronaut()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    bgr[:2, :, :] = rng.integers(0, 255, size=(2, size, 3), dtype=np.uint8)
    return bgr


def jpeg_bytes(frame: np.ndarray, quality: int = 90) -> bytes:
    import cv2
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture()
def unique_seed(request: pytest.FixtureRequest) -> int:
    return (hash(request.node.nodeid) ^ time.time_ns()) & 0x7FFFFFFF
