"""The retry rules of job tasks (pure logic): which errors are permanent, which are retried,
and how long the backoff waits."""

from __future__ import annotations

import psycopg
import pytest
import redis.exceptions

from infra.objectstore import TransientStorageError
from schemas.backoff import backoff_s
from workers.imageio import BadInputError
from workers.reliability import (
    TASK_BACKOFF_BASE_S,
    PermanentJobError,
    describe,
    is_permanent,
    is_transient_error,
)


@pytest.mark.parametrize("exc", [BadInputError("empty file"), PermanentJobError("tampered")])
def test_bad_input_is_permanent_and_keeps_its_message(exc: Exception) -> None:
    assert is_permanent(exc) and not is_transient_error(exc)
    assert describe(exc) == str(exc)


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("server closed the connection"),
    redis.exceptions.ConnectionError("refused"),
    TransientStorageError("S3 503 SlowDown"),
    ConnectionRefusedError(),
    TimeoutError(),
])
def test_service_outages_are_transient(exc: Exception) -> None:
    assert is_transient_error(exc) and not is_permanent(exc)


def test_a_defect_is_neither_and_is_named() -> None:
    exc = ZeroDivisionError("division by zero")
    assert not is_permanent(exc) and not is_transient_error(exc)
    assert describe(exc) == "ZeroDivisionError: division by zero"


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    early = [backoff_s(1, TASK_BACKOFF_BASE_S, 120, jitter=True) for _ in range(200)]
    late = [backoff_s(11, TASK_BACKOFF_BASE_S, 120, jitter=True) for _ in range(200)]
    assert max(early) <= 2.0 and min(early) >= 0.5
    assert max(late) <= 120 and len(set(late)) > 100  # jittered, not a fixed delay
    assert sum(late) / len(late) > 10 * sum(early) / len(early)
