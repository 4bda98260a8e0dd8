-- Video: chunk jobs, their frame ranges and progress; the probe of each video source; detections
-- that span a range of frames (a tracked face); and fail-closed assembly.

-- The probe summary (streams, time base, frame count, rotation, audio) recorded at ingest.
ALTER TABLE sources ADD COLUMN video jsonb;

-- A chunk job's plan (time range, seek point, frames it must emit) and its progress.
ALTER TABLE jobs ADD COLUMN frame_start integer;
ALTER TABLE jobs ADD COLUMN frame_count integer;
ALTER TABLE jobs ADD COLUMN frames_done integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN chunk jsonb;

-- A video detection covers frames frame_index..frame_end (one tracked region per row, with the
-- union of its boxes); NULL for a single-frame detection (images).
ALTER TABLE detections ADD COLUMN frame_end integer;

-- Fail closed: when a chunk fails, its source's assembly fails with it, naming the chunk and its
-- reason, so no output is published and nobody waits for an assembly that cannot happen. A
-- trigger covers every path that fails a job (the task's own failure, a dead letter, the lease
-- sweeper giving up), including ones added later.
CREATE FUNCTION veil_fail_assembly() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    reason text := format('chunk %s (job %s) failed: %s', NEW.chunk_index, NEW.id,
                          coalesce(NEW.error, 'no reason recorded'));
    assembly uuid;
BEGIN
    UPDATE jobs SET state = 'failed', error = reason, finished_at = now(), updated_at = now(),
                    lease_expires_at = NULL
     WHERE source_id = NEW.source_id AND kind = 'assemble' AND state IN ('queued', 'running')
    RETURNING id INTO assembly;
    IF assembly IS NOT NULL THEN
        INSERT INTO audit_events (actor, action, source_id, job_id, detail)
        VALUES ('ledger', 'job_failed', NEW.source_id, assembly,
                jsonb_build_object('reason', reason));
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_chunk_failed AFTER UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.kind = 'chunk' AND NEW.state = 'failed'
                       AND OLD.state IS DISTINCT FROM 'failed')
    EXECUTE FUNCTION veil_fail_assembly();
