-- Hands-off ingestion from the inbox (issue 18: `veil watch`).
--
-- inbox_objects: exactly one row per inbox object version the watcher handled, written in the
-- same transaction as the source it made (or found: a duplicate). It is what makes delivery
-- at-least-once but ingestion exactly-once: an object listed again, or an event delivered twice,
-- finds its row and is only released, never ingested again. The key is kept as its sha256 (it
-- names a camera and a file: personal data, invariant 9); the version id as S3 gave it ('' for
-- an unversioned bucket).
CREATE TABLE inbox_objects (
    bucket       text NOT NULL,
    key_sha256   text NOT NULL,
    version_id   text NOT NULL DEFAULT '',
    source_id    uuid REFERENCES sources (id),
    outcome      text NOT NULL CHECK (outcome IN ('ingested', 'duplicate', 'rejected')),
    detail       text,
    size_bytes   bigint NOT NULL DEFAULT 0,
    uploaded_at  timestamptz,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    PRIMARY KEY (bucket, key_sha256, version_id)
);
CREATE INDEX inbox_objects_source_idx ON inbox_objects (source_id);
CREATE INDEX inbox_objects_unreleased_idx ON inbox_objects (bucket) WHERE released_at IS NULL;

-- inbox_cursors: where a listing sweep of (bucket, prefix) stands, so a restarted watcher goes
-- on from there instead of listing from the start, plus what `veil status` shows of it. The
-- position is the last key handled (start-after of the next listing page); a finished sweep
-- resets it to '' and the next sweep begins again (objects uploaded behind the cursor are
-- found then). Correctness never depends on it: inbox_objects does.
CREATE TABLE inbox_cursors (
    bucket      text NOT NULL,
    prefix      text NOT NULL DEFAULT '',
    position    text NOT NULL DEFAULT '',
    sweeps      bigint NOT NULL DEFAULT 0,
    backlog     integer NOT NULL DEFAULT 0,
    paused      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, prefix)
);
