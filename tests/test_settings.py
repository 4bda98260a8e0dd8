"""Reliability settings are code: these tests pin their invariants."""

from __future__ import annotations

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
                                          messages.SWEEP_LEASES, messages.PURGE}
    scheduled = {entry["task"] for entry in config["beat_schedule"].values()}
    assert scheduled == {messages.RELAY_OUTBOX, messages.SWEEP_LEASES, messages.PURGE}


def test_visibility_timeout_must_exceed_hard_limit() -> None:
    with pytest.raises(ValidationError, match="visibility_timeout"):
        Settings(limits=LimitSettings(task_hard_time_limit_s=600, visibility_timeout_s=600))


def test_job_lease_must_exceed_hard_limit() -> None:
    with pytest.raises(ValidationError, match="job_lease_s"):
        Settings(limits=LimitSettings(task_hard_time_limit_s=600, job_lease_s=300))


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


def test_fault_injection_is_refused_outside_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_ENV", "development")
    with pytest.raises(ValidationError, match="only with VEIL_ENV=test"):
        Settings(test_job_delay_s=5)
