"""The lease heartbeat: while a job runs, a daemon thread in the worker child renews its lease.

Why a thread: the job body is one long call (decode, detect, encode) that cannot stop to renew;
the thread shares the child's life, so a SIGKILLed child or a lost parent stops renewing at once
and the lease runs out within ``limits.job_lease_s``. The thread uses its own connection (a
psycopg connection is not shared between threads) and reconnects after an error; a beat that
fails (PostgreSQL restarting) is logged and tried again at the next interval, and the lease is
three intervals long (checked in settings), so two late beats do not lose a live job.

Hazard: a renewal only extends the lease of a job still `running` under this worker's name;
once the job finished, or another worker claimed it (a duplicate delivery), the thread stops.
"""

from __future__ import annotations

import logging
import threading
import uuid
from types import TracebackType

from infra import db, jobs
from infra.db import Conn
from infra.settings import Settings

log = logging.getLogger(__name__)


class LeaseHeartbeat:
    """``with LeaseHeartbeat(settings, job_id, worker):`` renews the job's lease meanwhile."""

    def __init__(self, settings: Settings, job_id: uuid.UUID | str, worker: str) -> None:
        self.settings, self.job_id, self.worker = settings, str(job_id), worker
        self.renewals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)
        self._conn: Conn | None = None

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self.settings.db.connect_timeout_s + 5)

    def _run(self) -> None:
        interval = self.settings.limits.heartbeat_interval_s
        try:
            while not self._stop.wait(interval):
                if not self._beat():
                    return
        finally:
            if self._conn is not None:
                self._conn.close()

    def _beat(self) -> bool:
        """Renew once; False when the job is no longer ours to renew."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = db.connect(self.settings, autocommit=True)
            renewed = jobs.renew_lease(self._conn, self.job_id, self.worker,
                                       self.settings.limits.job_lease_s)
        except Exception as exc:  # noqa: BLE001 - the next beat tries again; the lease has slack
            log.warning("job %s: lease renewal failed, retrying in %s s: %s", self.job_id,
                        self.settings.limits.heartbeat_interval_s, exc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return True
        if renewed:
            self.renewals += 1
        # Before the first renewal the job may not be claimed yet (the body claims it): go on.
        return renewed or self.renewals == 0
