"""The ledger's side of the reconciler (``workers.retention.reconcile``): upload intents and
what `veil status` shows of unrecorded objects.

An ingest records a deletion task before it uploads an original (its intent), so an ingest
killed after the upload leaves an object the purge deletes anyway; the reconciler gives objects
that no row names a task due now. Both kinds carry a reason below, which `veil status` counts.
"""

from __future__ import annotations

from infra.db import Conn
from infra.settings import Settings

ORPHAN_REASON = "orphan: no ledger row named this object (reconciler)"
INTENT_REASON = "upload intent: the ingest did not record this original"


def record_upload_intent(conn: Conn, bucket: str, key: str, settings: Settings) -> None:
    """Before an original's bytes are written: a deletion task due ``orphan_grace_s`` from now,
    taken over by the source's own deadline when the ingest records it. An ingest killed after
    the upload thus leaves an object that the purge deletes anyway. A live task of that key
    (another ingest of the same bytes) is left alone; a done one (an earlier upload of these
    bytes that was never recorded and was purged) becomes pending again."""
    conn.execute(
        "INSERT INTO deletion_tasks (source_id, bucket, key, due_at, reason)"
        " VALUES (NULL, %s, %s, now() + make_interval(secs => %s), %s)"
        " ON CONFLICT (bucket, key) DO UPDATE SET state = 'pending', due_at = EXCLUDED.due_at,"
        " reason = EXCLUDED.reason, done_at = NULL, attempts = 0, next_attempt_at = NULL"
        " WHERE deletion_tasks.state = 'done'",
        (bucket, key, settings.limits.orphan_grace_s, INTENT_REASON))


def unrecorded_objects(conn: Conn) -> dict[str, object]:
    """For `veil status`: deletion tasks of objects no source claims (orphans found by the
    reconciler, and intents of ingests that never recorded), still to be deleted."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE reason = %s) AS orphans,"
        " count(*) FILTER (WHERE reason = %s) AS unrecorded_uploads,"
        " min(due_at) AS next_due FROM deletion_tasks"
        " WHERE source_id IS NULL AND state IN ('pending', 'failed')",
        (ORPHAN_REASON, INTENT_REASON)).fetchone() or {}
    due = row.get("next_due")
    return {"orphans": row.get("orphans", 0),
            "unrecorded_uploads": row.get("unrecorded_uploads", 0),
            "next_due": due.isoformat() if due else None}
