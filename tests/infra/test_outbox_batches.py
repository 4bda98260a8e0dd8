"""Several images per message when the images queue is deep (``infra.outbox``), against the real
Redis: what goes on the queue is read back off it, as a worker would receive it."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from infra import outbox
from infra.broker import QUEUE_CHUNKS, QUEUE_IMAGES, make_celery, queue_name
from infra.outbox import Message, plan_messages
from infra.settings import LimitSettings, Settings
from schemas import messages

IMAGE, CHUNK = messages.REDACT_IMAGE, messages.REDACT_CHUNK


def _rows(count: int, task: str = IMAGE, first: int = 1) -> list[tuple[int, str, str]]:
    # outbox ids that no row has: marking them sent touches nothing
    return [(-(first + i), task, str(uuid.uuid4())) for i in range(count)]


def test_images_go_per_message_in_order_and_other_jobs_alone() -> None:
    rows = _rows(9) + _rows(1, CHUNK, first=100) + _rows(9, first=200)
    plan = plan_messages(rows, 8)
    assert plan[0] == Message(CHUNK, [rows[9][0]], [rows[9][2]])
    images = [r for r in rows if r[1] == IMAGE]
    assert [(m.task_name, m.job_ids) for m in plan[1:]] == [
        (messages.REDACT_IMAGES, [r[2] for r in images[0:8]]),
        (messages.REDACT_IMAGES, [r[2] for r in images[8:16]]),
        (messages.REDACT_IMAGES, [r[2] for r in images[16:18]])]
    # every row is in exactly one message, with its outbox id beside its job id
    assert sorted(i for m in plan for i in m.outbox_ids) == sorted(r[0] for r in rows)
    assert all(len(m.outbox_ids) == len(m.job_ids) for m in plan)
    # one image left over goes as a plain image message; batching off sends each alone
    assert plan_messages(_rows(9), 8)[-1].task_name == IMAGE
    assert [m.task_name for m in plan_messages(rows, 1)] == [r[1] for r in rows]


@pytest.fixture()
def private(services: Settings) -> Iterator[Settings]:
    """A queue prefix no worker serves, so the messages stay where the test can read them."""
    prefix = f"veil-test-outbox-{uuid.uuid4().hex[:8]}"
    settings = services.model_copy(update={
        "broker": services.broker.model_copy(update={"queue_prefix": prefix})})
    client = redis.Redis.from_url(settings.broker.url)
    yield settings
    client.delete(*(queue_name(settings, q) for q in (QUEUE_IMAGES, QUEUE_CHUNKS)))


def _queued(settings: Settings, queue: str) -> list[tuple[str, list[Any]]]:
    """(task name, positional arguments) of each message waiting in ``queue``, oldest first."""
    client = redis.Redis.from_url(settings.broker.url)
    found = []
    for raw in reversed(client.lrange(queue_name(settings, queue), 0, -1)):  # LPUSH, BRPOP
        message = json.loads(raw)
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], args))
    return found


def _with_limits(settings: Settings, **limits: int) -> Settings:
    merged = {**settings.limits.model_dump(), **limits}
    return settings.model_copy(update={"limits": LimitSettings(**merged)})


def test_a_shallow_queue_gets_one_image_a_message_and_a_deep_one_batches(
        private: Settings) -> None:
    settings = _with_limits(private, images_per_task=8, images_batch_depth=16)
    app = make_celery(settings)
    # given an empty images queue: 20 images go one a message, so idle children all start
    first = _rows(20)
    assert outbox.send_rows(app, settings, first) == 20
    queued = _queued(settings, QUEUE_IMAGES)
    assert queued == [(IMAGE, [r[2]]) for r in first]
    # when 20 more come while those 20 wait (depth 20 >= 16)
    second = _rows(19, first=100) + _rows(1, CHUNK, first=200)
    assert outbox.send_rows(app, settings, second) == 20
    # then they go 8, 8 and 3 ids a message, in order, ids only; the chunk goes alone
    queued = _queued(settings, QUEUE_IMAGES)[20:]
    ids = [r[2] for r in second[:19]]
    assert queued == [(messages.REDACT_IMAGES, ids[0:8]), (messages.REDACT_IMAGES, ids[8:16]),
                      (messages.REDACT_IMAGES, ids[16:19])]
    assert all(str(uuid.UUID(a)) == a for _, args in queued for a in args)
    assert _queued(settings, QUEUE_CHUNKS) == [(CHUNK, [second[19][2]])]


def test_batching_off_sends_each_image_alone_however_deep_the_queue(private: Settings) -> None:
    settings = _with_limits(private, images_per_task=1, images_batch_depth=0)
    rows = _rows(10)
    assert outbox.send_rows(make_celery(settings), settings, rows) == 10
    assert _queued(settings, QUEUE_IMAGES) == [(IMAGE, [r[2]]) for r in rows]
