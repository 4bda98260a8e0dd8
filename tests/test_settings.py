"""Reliability settings are code: these tests pin their invariants."""

from __future__ import annotations

from datetime import timedelta

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
    assert set(config["task_routes"]) == {messages.REDACT_IMAGE, messages.RELAY_OUTBOX,
                                          messages.SWEEP_LEASES, messages.PURGE,
                                          messages.RECONCILE_OBJECTS}
    scheduled = {entry["task"] for entry in config["beat_schedule"].values()}
    assert scheduled == {messages.RELAY_OUTBOX, messages.SWEEP_LEASES, messages.PURGE,
                         messages.RECONCILE_OBJECTS}


def test_visibility_timeout_must_exceed_hard_limit() -> None:
    with pytest.raises(ValidationError, match="visibility_timeout"):
        Settings(limits=LimitSettings(task_hard_time_limit_s=600, visibility_timeout_s=600))


def test_default_settings_requeue_a_lost_workers_job_within_three_minutes() -> None:
    # given the defaults, when a worker dies right after renewing its lease,
    # then its lease runs out after job_lease_s and the next sweep comes within sweep_interval_s
    settings = Settings()
    limits = settings.limits
    sweep = celery_config(settings)["beat_schedule"]["sweep-leases"]
    assert sweep["schedule"] == timedelta(seconds=limits.sweep_interval_s)
    assert sweep["options"]["expires"] <= limits.sweep_interval_s  # no backlog of old ticks
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


def test_production_refuses_default_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_ENV", "production")
    with pytest.raises(ValidationError, match="default credentials"):
        Settings()


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
