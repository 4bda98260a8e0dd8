"""Reliability settings are code: these tests pin their invariants."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import ValidationError

from infra.broker import celery_config
from infra.settings import LimitSettings, Settings
from schemas import messages


def test_celery_reliability_settings() -> None:
    config = celery_config(Settings())
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_send_task_events"] is True and config["task_send_sent_event"] is True
    assert config["accept_content"] == ["json"]
    hard = config["task_time_limit"]
    assert config["task_soft_time_limit"] < hard
    assert config["broker_transport_options"]["visibility_timeout"] > hard


def test_every_task_is_routed_and_scheduled() -> None:
    config = celery_config(Settings())
    assert set(config["task_routes"]) == {messages.REDACT_IMAGE, messages.REDACT_IMAGES,
                                          messages.REDACT_CHUNK,
                                          messages.ASSEMBLE_VIDEO, messages.RELAY_OUTBOX,
                                          messages.SWEEP_LEASES, messages.PURGE,
                                          messages.RECONCILE_OBJECTS, messages.ERASE}
    scheduled = {entry["task"] for entry in config["beat_schedule"].values()}
    # the lease sweeper runs in beat's own thread instead (workers.app.sweep_forever)
    assert scheduled == {messages.RELAY_OUTBOX, messages.PURGE, messages.RECONCILE_OBJECTS}


def test_visibility_timeout_must_exceed_hard_limit() -> None:
    with pytest.raises(ValidationError, match="visibility_timeout"):
        Settings(limits=LimitSettings(task_hard_time_limit_s=600, visibility_timeout_s=600))


def test_default_settings_requeue_a_lost_workers_job_within_three_minutes() -> None:
    # given the defaults, when a worker dies right after renewing its lease,
    # then its lease runs out after job_lease_s and the next sweep comes within sweep_interval_s
    limits = Settings().limits
    assert limits.lost_worker_requeue_bound_s() == limits.job_lease_s + limits.sweep_interval_s
    assert limits.lost_worker_requeue_bound_s() <= 180
    assert (limits.job_lease_s, limits.heartbeat_interval_s) == (60, 20)


def test_heartbeat_is_well_below_the_lease() -> None:
    limits = Settings().limits
    assert limits.heartbeat_interval_s * 3 <= limits.job_lease_s
    with pytest.raises(ValidationError, match="heartbeat_interval_s"):
        Settings(limits=LimitSettings(job_lease_s=60, heartbeat_interval_s=30))


def test_a_lease_may_be_shorter_than_the_hard_limit_because_it_is_renewed() -> None:
    limits = Settings(limits=LimitSettings(task_hard_time_limit_s=600, job_lease_s=60)).limits
    assert limits.job_lease_s < limits.task_hard_time_limit_s < limits.visibility_timeout_s


def test_orphans_are_found_within_minutes() -> None:
    limits = Settings().limits
    assert limits.orphan_grace_s + limits.reconcile_interval_s <= 20 * 60


def _production_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_ENV", "production")
    monkeypatch.setenv("VEIL_S3__SECURE", "true")
    monkeypatch.setenv("VEIL_DB__URL", "postgresql://veil_worker@db/veil?sslmode=verify-full")
    monkeypatch.setenv("VEIL_BROKER__URL", "rediss://redis:6379/0")
    monkeypatch.setenv("VEIL_BROKER__RESULT_URL", "rediss://redis:6379/1")


def test_production_refuses_plaintext_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_ENV", "production")
    with pytest.raises(ValidationError, match="plaintext connections") as refused:
        Settings()
    for what in ("S3 without TLS", "db.url without sslmode=verify-full", "broker.url is not"):
        assert what in str(refused.value)
    _production_env(monkeypatch)
    monkeypatch.setenv("VEIL_DB__ROLE_URLS", '{"operator": "postgresql://o@db/veil"}')
    with pytest.raises(ValidationError, match="db.role_urls.operator without sslmode"):
        Settings()


def test_production_refuses_default_credentials_of_the_role_used(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from infra.objectstore import client_for
    _production_env(monkeypatch)
    monkeypatch.setenv("VEIL_S3__WORKER__ACCESS_KEY", "veil-worker")
    monkeypatch.setenv("VEIL_S3__WORKER__SECRET_KEY", "a-real-secret")
    settings = Settings()
    client_for("worker", settings)  # its own credentials: fine
    with pytest.raises(PermissionError, match="no S3 credentials for role .retention."):
        client_for("retention", settings)  # a worker holds no delete credentials


def test_nested_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_S3__ENDPOINT", "minio:9000")
    monkeypatch.setenv("VEIL_S3__WORKER__ACCESS_KEY", "w")
    monkeypatch.setenv("VEIL_S3__WORKER__SECRET_KEY", "s")
    monkeypatch.setenv("VEIL_LIMITS__MAX_IMAGE_PIXELS", "1000")
    settings = Settings()
    assert settings.s3.endpoint == "minio:9000"
    assert settings.s3.worker.access_key == "w"
    assert settings.limits.max_image_pixels == 1000


@pytest.mark.parametrize("hook", ["test_job_delay_s", "test_ingest_pause_s"])
def test_fault_injection_is_refused_outside_tests(monkeypatch: pytest.MonkeyPatch,
                                                  hook: str) -> None:
    monkeypatch.setenv("VEIL_ENV", "development")
    with pytest.raises(ValidationError, match="only with VEIL_ENV=test"):
        Settings(**{hook: 5})


def test_beat_sweeps_on_its_own_thread_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    # given beat's sweeper with a 1 s interval (the sweep itself recorded, not run)
    import workers.app
    import workers.maintenance
    from infra.settings import reset_settings_cache
    monkeypatch.setenv("VEIL_LIMITS__SWEEP_INTERVAL_S", "1")
    reset_settings_cache()
    ticks: list[float] = []
    monkeypatch.setattr(workers.maintenance, "sweep",
                        lambda app, settings: ticks.append(time.monotonic()) or
                        {"requeued": 0, "gave_up": 0, "sent": 0})
    stop = threading.Event()
    thread = threading.Thread(target=workers.app.sweep_forever, args=(stop,), daemon=True)
    # when it runs for 3.5 s, then it swept about three times, no sooner than a second apart,
    # and stops when asked
    thread.start()
    time.sleep(3.5)
    stop.set()
    thread.join(timeout=5)
    reset_settings_cache()
    assert 2 <= len(ticks) <= 3 and not thread.is_alive()
    assert all(b - a >= 0.9 for a, b in zip(ticks, ticks[1:], strict=False))


def test_transient_retries_outlast_a_service_restart() -> None:
    # given the default retry budget, the backoffs a job waits before giving up on an
    # unreachable service add up (on average: the jitter is uniform) to more than a minute
    limits = Settings().limits
    waits = [(0.5 + min(limits.retry_backoff_max_s, 2 ** (r + 1))) / 2
             for r in range(limits.max_attempts - 1)]
    assert sum(waits) >= 60


def test_each_workload_has_its_own_queue() -> None:
    # given the default prefix, then images, video chunks and assembly go to queues of their own,
    # so a GPU node can take chunks alone and CPU nodes the rest
    from infra.settings import BrokerSettings
    plain = Settings(broker=BrokerSettings(queue_prefix="veil"))
    routes = celery_config(plain)["task_routes"]
    assert routes[messages.REDACT_IMAGE]["queue"] == "veil.images"
    assert routes[messages.REDACT_IMAGES]["queue"] == "veil.images"  # several images a message
    assert routes[messages.REDACT_CHUNK]["queue"] == "veil.chunks"
    assert routes[messages.ASSEMBLE_VIDEO]["queue"] == "veil.assembly"
    assert routes[messages.PURGE]["queue"] == routes[messages.ERASE]["queue"] == "veil.retention"
    assert celery_config(plain)["task_default_queue"] == "veil.maintenance"


def test_veil_worker_queues_names_workloads_and_refuses_retention() -> None:
    import subprocess
    import sys
    from pathlib import Path
    veil = str(Path(sys.executable).parent / "veil")
    # when a workload that does not exist, or the retention queue, is asked for
    for given, said in (("images,gpu", "unknown workload gpu"),
                        ("retention", "use --retention")):
        run = subprocess.run([veil, "worker", "--queues", given], capture_output=True, text=True,
                             timeout=60)
        # then it is a usage error naming the problem, before any worker starts
        assert run.returncode == 2 and said in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
