"""Ledger reads and writes for human review (GDPR Art. 22): the ``reviews`` table.

A detection whose score lies in the policy's review band was redacted all the same; the ledger
lists the sources that have such detections and records that a person looked. The SQL lives
here, beside the other table owners, so that the CLI holds none.
"""

from __future__ import annotations

import uuid
from typing import Any

from infra.db import Conn

_PENDING_SQL = """
SELECT s.id AS source_id, s.original_name, s.kind, s.camera, s.policy_name,
       count(*) AS uncertain, array_agg(DISTINCT d.class ORDER BY d.class) AS classes,
       min(d.score) AS min_score, max(d.score) AS max_score,
       (SELECT max(r.reviewed_at) FROM reviews r WHERE r.source_id = s.id) AS reviewed_at
FROM detections d
JOIN jobs j ON j.id = d.job_id
JOIN sources s ON s.id = j.source_id
WHERE d.uncertain
  AND (%(all)s OR NOT EXISTS (SELECT 1 FROM reviews r WHERE r.source_id = s.id))
GROUP BY s.id
ORDER BY min(s.created_at), s.id
LIMIT %(limit)s
"""


def sources_awaiting_review(conn: Conn, include_reviewed: bool, limit: int) -> list[dict[str, Any]]:
    """Sources with uncertain detections, oldest first (reviewed ones too if asked)."""
    return conn.execute(_PENDING_SQL, {"all": include_reviewed, "limit": limit}).fetchall()


def record_review(conn: Conn, source_id: uuid.UUID, reviewer: str, note: str) -> bool:
    """Record that ``reviewer`` looked at ``source_id``; False (nothing written) if unknown."""
    found = conn.execute("SELECT 1 FROM sources WHERE id = %s", (source_id,)).fetchone()
    if found is None:
        return False
    conn.execute("INSERT INTO reviews (source_id, reviewed_by, note) VALUES (%s, %s, %s)",
                 (source_id, reviewer, note))
    return True
