"""docker-compose.yml, the production shape, checked without a Docker engine: the YAML must agree
with the settings model and keep the reliability and secrecy choices the design depends on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from infra.broker import (
    QUEUE_ASSEMBLY,
    QUEUE_CHUNKS,
    QUEUE_IMAGES,
    QUEUE_MAINTENANCE,
    QUEUE_RETENTION,
    queue_name,
)
from infra.settings import BrokerSettings, Settings

REPO = Path(__file__).resolve().parent.parent
VEIL_SERVICES = ["migrate", "worker", "worker-gpu", "retention", "beat", "flower", "watch",
                 "producer", "operator", "hold"]
# The S3 role and PostgreSQL user each service holds; None: it holds none.
CREDENTIALS = {"migrate": (None, "veil_owner"), "worker": ("worker", "veil_worker"),
               "worker-gpu": ("worker", "veil_worker"),
               "retention": ("retention", "veil_retention"), "beat": (None, "veil_worker"),
               "flower": (None, None), "watch": ("producer", "veil_producer"),
               "producer": ("producer", "veil_producer"),
               "operator": ("operator", "veil_operator"), "hold": ("hold", "veil_retention")}
REQUIRED = ["minio", "redis", "postgres", *VEIL_SERVICES]


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return compose["services"]  # type: ignore[no-any-return]


def settings_env_names(model: type[BaseModel] = Settings, prefix: str = "VEIL_") -> set[str]:
    """Every environment name pydantic-settings reads: VEIL_ + nested field names joined by __."""
    names = set()
    for field, info in model.model_fields.items():
        name = prefix + field.upper()
        names.add(name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            names |= settings_env_names(info.annotation, name + "__")
    return names


def command(service: dict[str, Any]) -> list[str]:
    cmd = service["command"]
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def test_required_services_exist(services: dict[str, dict[str, Any]]) -> None:
    assert set(REQUIRED) <= set(services)


@pytest.mark.parametrize("name", VEIL_SERVICES)
def test_every_veil_variable_is_a_real_setting(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    known = settings_env_names()
    used = {k for k in services[name]["environment"] if k.startswith("VEIL_")}

    assert {"VEIL_BROKER__URL", "VEIL_S3__ENDPOINT"} <= used
    assert used - known == set()


@pytest.mark.parametrize("name", VEIL_SERVICES)
def test_each_service_holds_only_its_own_credentials(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = services[name]["environment"]
    role, user = CREDENTIALS[name]
    s3_roles = {k.split("__")[1].lower() for k in env if k.startswith("VEIL_S3__")
                and k.endswith("__SECRET_KEY")}
    assert s3_roles == ({role} if role else set())
    assert "VEIL_S3__ADMIN__SECRET_KEY" not in env  # no Veil service may create or wipe buckets
    if user is None:
        assert "VEIL_DB__URL" not in env
    else:
        assert env["VEIL_DB__URL"].startswith(f"postgresql://{user}:")
    flower_secret = "VEIL_STACK__FLOWER_PASSWORD" in env
    assert flower_secret == (name == "flower")


@pytest.mark.parametrize("name", VEIL_SERVICES)
def test_every_connection_is_encrypted(services: dict[str, dict[str, Any]], name: str) -> None:
    env = services[name]["environment"]
    assert env["VEIL_S3__SECURE"] == "true" and env["VEIL_S3__CA_FILE"]
    assert env["VEIL_BROKER__URL"].startswith("rediss://")
    assert env["VEIL_BROKER__RESULT_URL"].startswith("rediss://")
    if "VEIL_DB__URL" in env:
        assert "sslmode=verify-full" in env["VEIL_DB__URL"]
    assert "--tls-port" in command(services["redis"]) and "ssl=on" in command(services["postgres"])


def test_postgres_superuser_is_for_the_init_script_only(
    services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    assert postgres["environment"]["POSTGRES_USER"] == "postgres"
    assert any("postgres-init.sh" in v for v in postgres["volumes"])
    assert (REPO / "infra" / "assets" / "postgres-init.sh").is_file()
    for name in VEIL_SERVICES:
        assert "postgresql://postgres:" not in str(services[name]["environment"])


def test_only_the_retention_worker_consumes_the_retention_queue(
    services: dict[str, dict[str, Any]]
) -> None:
    retention = queue_name(Settings(broker=BrokerSettings(queue_prefix="veil")), QUEUE_RETENTION)
    for name in ("worker", "worker-gpu", "retention"):
        queues = set(command(services[name])[command(services[name]).index("-Q") + 1].split(","))
        assert (retention in queues) == (name == "retention")


def test_settings_walk_finds_nested_names() -> None:
    names = settings_env_names()
    assert {"VEIL_S3__OPERATOR__SECRET_KEY", "VEIL_STACK__FLOWER_PASSWORD",
            "VEIL_LIMITS__MAX_FILE_BYTES"} <= names
    assert "VEIL_S3__WORKER" in names and "VEIL_S3__WORKERS__ACCESS_KEY" not in names


@pytest.mark.parametrize("name", VEIL_SERVICES)
def test_secrets_come_from_required_interpolation(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    env = services[name]["environment"]
    assert env["VEIL_ENV"] == "production"
    for key, value in env.items():
        if "SECRET" in key or "PASSWORD" in key:
            assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), f"{name}: {key} is not ${{VAR:?}}"
    if "VEIL_DB__URL" in env:
        assert re.search(r":\$\{VEIL_PG_\w+_PASSWORD:\?", env["VEIL_DB__URL"])


def test_redis_keeps_jobs_across_restarts_and_never_evicts(
    services: dict[str, dict[str, Any]]
) -> None:
    cmd = " ".join(command(services["redis"]))
    assert services["redis"]["image"].startswith("redis:7")
    assert "--appendonly yes" in cmd
    assert "--maxmemory-policy noeviction" in cmd


def test_minio_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    image = services["minio"]["image"]
    assert re.fullmatch(r"minio/minio:RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z", image)
    assert services["minio-init"]["image"] == image


@pytest.mark.parametrize("name", ["worker", "worker-gpu", "beat"])
def test_celery_processes_use_the_workers_app(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    cmd = command(services[name])
    assert cmd[:3] == ["celery", "-A", "workers.app"]
    if name != "beat":
        # The queue names the producer sends to, under the compose environment's prefix.
        env = services[name]["environment"]
        prefix = env.get("VEIL_BROKER__QUEUE_PREFIX", BrokerSettings().queue_prefix)
        deployed = Settings(broker=BrokerSettings(queue_prefix=prefix))
        # CPU workers take images, assembly and maintenance, and video chunks unless told
        # otherwise (VEIL_CPU_QUEUES, when the gpu profile runs); the GPU worker takes chunks
        queues = cmd[cmd.index("-Q") + 1]
        if name == "worker":
            default = queues.removeprefix("${VEIL_CPU_QUEUES:-").removesuffix("}")
            assert queues.startswith("${VEIL_CPU_QUEUES:-") and default != queues
            wanted = {queue_name(deployed, q) for q in
                      (QUEUE_IMAGES, QUEUE_CHUNKS, QUEUE_ASSEMBLY, QUEUE_MAINTENANCE)}
            assert set(default.split(",")) == wanted
        else:
            assert queues == queue_name(deployed, QUEUE_CHUNKS)


def test_flower_has_basic_auth_from_the_environment(services: dict[str, dict[str, Any]]) -> None:
    flower = services["flower"]
    env = flower["environment"]
    assert command(flower)[:2] == ["veil", "flower"]
    assert "ports" not in flower  # internal only: neither the UI nor /metrics is published
    assert env["VEIL_STACK__FLOWER_USER"].startswith("${VEIL_STACK__FLOWER_USER:?")
    assert env["VEIL_STACK__FLOWER_PASSWORD"].startswith("${VEIL_STACK__FLOWER_PASSWORD:?")


def test_gpu_worker_is_opt_in_and_asks_for_a_gpu(services: dict[str, dict[str, Any]]) -> None:
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert "profiles" not in services["worker"]
    assert gpu["environment"]["VEIL_MODELS__PROVIDER"] == "cuda"
    assert gpu["build"]["args"]["EXTRAS"] == "[gpu]"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_migrations_run_before_the_workers(services: dict[str, dict[str, Any]]) -> None:
    assert command(services["migrate"]) == ["veil", "db", "upgrade"]
    for name in ("worker", "retention", "beat", "flower"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_minio_policies_exist_for_every_role() -> None:
    for role in Settings().s3_roles():
        assert (REPO / "infra" / "assets" / f"minio-policy-{role}.json").is_file()
