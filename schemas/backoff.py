"""The one backoff schedule: how long a retry waits, for job tasks and for deletions alike.

Pure arithmetic, no I/O, so the producer (`veil erase` schedules a failed deletion's retry) and
the workers (job task retries, the purge) share it without importing each other.
"""

from __future__ import annotations

import random

JITTER_FLOOR_S = 0.5  # a jittered wait is never shorter: a retry at once would hit the same fault


def backoff_s(attempt: int, base_s: float, cap_s: float, *, jitter: bool = False) -> float:
    """Seconds before retry number ``attempt`` (1-based): ``base_s * 2 ** (attempt - 1)``,
    capped at ``cap_s``. With ``jitter``, uniform in [``JITTER_FLOOR_S``, that ceiling], so
    tasks that failed together (a service restart) do not retry together; without it, the
    ceiling itself, so a deletion's next attempt is predictable in `veil status`."""
    ceiling = float(min(cap_s, base_s * 2 ** max(0, attempt - 1)))
    return random.uniform(JITTER_FLOOR_S, ceiling) if jitter else ceiling
