"""The Celery app: `celery -A workers.app worker` (or `veil worker`)."""

from __future__ import annotations

from infra.broker import make_celery

app = make_celery(name="veil")
app.conf.include = ["workers.tasks", "workers.tasks_video", "workers.tasks_retention"]
