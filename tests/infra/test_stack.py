"""The embedded stack: ``stack_up`` starts SeaweedFS and is idempotent, ``stack_status`` starts
nothing.

These bring up a SeaweedFS of their own (other ports, a temporary state folder), so they test a
real start whatever else runs on the machine; the server is killed at the end (a graceful stop
takes ~30 s and is exercised by `veil stack down`, not here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from infra.settings import Settings
from infra.stack import (
    StackError,
    check_redis,
    check_s3,
    s3_identities,
    stack_status,
    stack_up,
)


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    state = tmp_path_factory.mktemp("stack-state")
    own = settings.model_copy(update={
        "s3": settings.s3.model_copy(update={"endpoint": "127.0.0.1:18433"}),
        "stack": settings.stack.model_copy(update={
            "state_dir": state, "s3_port": 18433, "master_port": 19433,
            "volume_port": 18180, "filer_port": 18988}),
    })
    said: list[str] = []
    stack_up(own, echo=said.append)
    assert any("starting SeaweedFS" in line for line in said), said
    yield own
    pid = int(_weed_pid(own))
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    shutil.rmtree(state, ignore_errors=True)


def _weed_pid(settings: Settings) -> str:
    return (settings.stack.state_dir / "seaweedfs.pid").read_text()


def test_stack_up_twice_starts_nothing_new(stack: Settings) -> None:
    pid_before = _weed_pid(stack)
    said: list[str] = []

    statuses = stack_up(stack, echo=said.append)

    assert [s.name for s in statuses] == ["redis", "postgres", "s3"]
    assert all(s.ok for s in statuses), statuses
    assert _weed_pid(stack) == pid_before
    assert any("already running" in line for line in said)
    assert not any("starting" in line or "created" in line for line in said)


def test_stack_status_reports_every_service_ok(stack: Settings) -> None:
    statuses = {s.name: s for s in stack_status(stack)}

    assert set(statuses) == {"redis", "postgres", "s3"}
    assert all(s.ok for s in statuses.values()), statuses
    assert stack.s3.bucket_raw in statuses["s3"].detail


def test_s3_json_on_disk_is_private_and_matches_settings(stack: Settings) -> None:
    path = stack.stack.state_dir / "s3.json"
    assert path.stat().st_mode & 0o077 == 0  # it holds every role's secret
    assert json.loads(path.read_text()) == s3_identities(stack)


def test_checks_report_failures_without_starting_anything(stack: Settings) -> None:
    wrong_secret = stack.model_copy(update={"s3": stack.s3.model_copy(update={
        "admin": stack.s3.admin.model_copy(update={"secret_key": SecretStr("wrong")})})})
    no_redis = stack.model_copy(update={"broker": stack.broker.model_copy(
        update={"url": "redis://127.0.0.1:1/0"})})

    assert not check_s3(wrong_secret).ok
    redis_status = check_redis(no_redis)
    assert not redis_status.ok and "127.0.0.1:1" in redis_status.detail


def test_unreachable_remote_redis_says_how_to_provide_one(stack: Settings) -> None:
    remote = stack.model_copy(update={"broker": stack.broker.model_copy(
        update={"url": "redis://:hunter2@redis.invalid:6379/0"})})

    with pytest.raises(StackError, match="VEIL_BROKER__URL") as error:
        stack_up(remote, echo=lambda _line: None)
    assert "hunter2" not in str(error.value)
