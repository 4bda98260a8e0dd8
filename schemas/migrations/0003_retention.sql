-- Retention, erasure, legal holds (issue: retention).
--
-- Deletion tasks gain a retry time: a failed deletion is retried with backoff and stays visible
-- (state 'failed' after too many attempts, still retried) instead of being dropped. The purge
-- claims due tasks with FOR UPDATE SKIP LOCKED in the order of this partial index.

ALTER TABLE deletion_tasks ADD COLUMN next_attempt_at timestamptz;
ALTER TABLE deletion_tasks ADD COLUMN claimed_by text;
CREATE INDEX deletion_tasks_claim_idx ON deletion_tasks (due_at)
    WHERE state IN ('pending', 'failed');
CREATE INDEX deletion_tasks_source_idx ON deletion_tasks (source_id);

-- One active hold per source; a released hold stays on record with who released it and why.
ALTER TABLE legal_holds ADD COLUMN release_reason text;
ALTER TABLE legal_holds ADD COLUMN s3_objects integer NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX legal_holds_one_active_idx ON legal_holds (source_id)
    WHERE released_at IS NULL;

-- The tombstone of an erased source keeps its id and sha256 (so the same bytes are refused on
-- re-ingest) and nothing personal: the database itself refuses a tombstone that still names a
-- file, a camera or a capture time.
ALTER TABLE sources ADD CONSTRAINT sources_tombstone_is_anonymous CHECK (
    erased_at IS NULL OR (original_name = 'erased' AND camera IS NULL AND captured_at IS NULL));

-- Access requests select by camera and capture time; `veil audit --since` by time.
CREATE INDEX sources_camera_captured_idx ON sources (camera, captured_at);
CREATE INDEX audit_events_at_idx ON audit_events (at);

-- The purge finds an object's checksum for its receipt by (bucket, key).
CREATE INDEX artifacts_object_idx ON artifacts (bucket, key);
CREATE INDEX artifacts_source_idx ON artifacts (source_id);

-- A video's length, so that an access request finds a recording that overlaps the asked range
-- even when it started before it (NULL for images: a point in time).
ALTER TABLE sources ADD COLUMN duration_s double precision;
