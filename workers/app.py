"""The Celery app: `celery -A workers.app worker` (or `veil worker`).

The lease sweeper runs inside `veil beat` (a thread started when beat starts), not as a task:
a task waits for a free pool slot, and when every slot runs a long job (video chunks take
minutes) the sweep would wait too, or expire unrun, exactly when a lost worker's job needs it.
In beat it runs every ``limits.sweep_interval_s`` whatever the workers do, which is what makes
"a lost worker's job is re-queued within ``job_lease_s + sweep_interval_s``" hold. Leases are
renewed by a thread in each worker child (``workers.lease``, wired in ``run_guarded``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import beat_init

from infra.broker import make_celery

log = logging.getLogger(__name__)

app = make_celery(name="veil")
app.conf.include = ["workers.tasks", "workers.tasks_video", "workers.tasks_retention"]


def sweep_forever(stop: threading.Event) -> None:
    """Sweep every ``limits.sweep_interval_s`` until ``stop`` is set; an error (PostgreSQL or
    Redis restarting) is logged and the next tick tries again."""
    from infra.settings import get_settings
    from workers.maintenance import sweep
    settings = get_settings()
    while not stop.wait(settings.limits.sweep_interval_s):
        try:
            result = sweep(app, settings)
        except Exception as exc:  # noqa: BLE001 - the sweeper must outlive service restarts
            log.warning("lease sweep failed, next in %s s: %s",
                        settings.limits.sweep_interval_s, exc)
            continue
        if result["requeued"] or result["gave_up"]:
            log.info("lease sweep: %s", result)


@beat_init.connect
def _start_sweeper(sender: Any = None, **kwargs: Any) -> None:
    threading.Thread(target=sweep_forever, args=(threading.Event(),), name="lease-sweeper",
                     daemon=True).start()
