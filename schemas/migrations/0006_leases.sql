-- Reliability (issue 15): attempts counted by cause, and indexes for the stall checks.
--
-- A job's attempts are counted by what ended each one: {"worker_lost": 2, "transient": 1}.
-- The give-up reason names these counts, so an operator can tell a crashing worker from an
-- unreachable service. `veil retry` resets them (the audit event keeps the old counts).
ALTER TABLE jobs ADD COLUMN attempt_causes jsonb NOT NULL DEFAULT '{}'::jsonb;

-- The sweeper and `veil status` look for running jobs whose lease ran out and queued jobs
-- that waited too long; both scan only the unfinished jobs.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_enqueued_idx ON jobs (enqueued_at) WHERE state = 'queued';

-- The reconciler looks objects up by (bucket, key) in sources (raw originals).
CREATE INDEX sources_raw_object_idx ON sources (raw_bucket, raw_key);
