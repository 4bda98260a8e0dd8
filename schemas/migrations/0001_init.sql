-- Veil ledger, version 1: the truth about every object Veil holds.
-- Original file names are kept only in `sources` (needed to name exports); they never travel in
-- task arguments, logs or metrics.

CREATE TABLE sources (
    id              uuid PRIMARY KEY,
    sha256          text NOT NULL UNIQUE,
    kind            text NOT NULL CHECK (kind IN ('image', 'video')),
    media_format    text NOT NULL,
    original_name   text NOT NULL,
    size_bytes      bigint NOT NULL,
    raw_bucket      text NOT NULL,
    raw_key         text NOT NULL,
    raw_version_id  text,
    policy_name     text NOT NULL,
    policy_version  integer NOT NULL,
    policy          jsonb NOT NULL,
    camera          text,
    captured_at     timestamptz,
    origin          text NOT NULL DEFAULT 'upload',
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE jobs (
    id                uuid PRIMARY KEY,
    source_id         uuid NOT NULL REFERENCES sources (id),
    kind              text NOT NULL CHECK (kind IN ('image', 'chunk', 'assemble')),
    chunk_index       integer NOT NULL DEFAULT 0,
    state             text NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts          integer NOT NULL DEFAULT 0,
    error             text,
    worker            text,
    lease_expires_at  timestamptz,
    enqueued_at       timestamptz,
    started_at        timestamptz,
    finished_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_id, kind, chunk_index)
);
CREATE INDEX jobs_state_idx ON jobs (state);

CREATE TABLE artifacts (
    id             bigserial PRIMARY KEY,
    job_id         uuid NOT NULL REFERENCES jobs (id),
    source_id      uuid NOT NULL REFERENCES sources (id),
    stage          text NOT NULL,
    model_version  text NOT NULL,
    bucket         text NOT NULL,
    key            text NOT NULL,
    version_id     text,
    sha256         text NOT NULL,
    size_bytes     bigint NOT NULL,
    content_type   text NOT NULL,
    width          integer,
    height         integer,
    params         jsonb NOT NULL,
    input_sha256   text NOT NULL,
    timings        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, stage, model_version)
);

CREATE TABLE detections (
    id             bigserial PRIMARY KEY,
    job_id         uuid NOT NULL REFERENCES jobs (id),
    stage          text NOT NULL,
    model_version  text NOT NULL,
    frame_index    integer NOT NULL DEFAULT 0,
    class          text NOT NULL,
    score          real NOT NULL,
    x1 real NOT NULL, y1 real NOT NULL, x2 real NOT NULL, y2 real NOT NULL
);
CREATE INDEX detections_job_idx ON detections (job_id, stage, model_version);

CREATE TABLE deletion_tasks (
    id           bigserial PRIMARY KEY,
    source_id    uuid REFERENCES sources (id),
    bucket       text NOT NULL,
    key          text NOT NULL,
    due_at       timestamptz NOT NULL,
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'done', 'deferred', 'failed')),
    reason       text NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    receipt      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz,
    UNIQUE (bucket, key)
);
CREATE INDEX deletion_tasks_due_idx ON deletion_tasks (state, due_at);

CREATE TABLE legal_holds (
    id           bigserial PRIMARY KEY,
    source_id    uuid NOT NULL REFERENCES sources (id),
    reason       text NOT NULL,
    set_by       text NOT NULL,
    set_at       timestamptz NOT NULL DEFAULT now(),
    released_by  text,
    released_at  timestamptz
);

CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    source_id   uuid,
    job_id      uuid,
    bucket      text,
    key         text,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_source_idx ON audit_events (source_id, at);

-- Append-only: privileges do not bind a superuser, so a trigger refuses changes for everyone.
CREATE FUNCTION veil_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION veil_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION veil_audit_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC;

CREATE TABLE dead_letters (
    id         bigserial PRIMARY KEY,
    job_id     uuid REFERENCES jobs (id),
    task_name  text NOT NULL,
    error      text NOT NULL,
    attempts   integer NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES jobs (id),
    task_name   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    integer NOT NULL DEFAULT 0
);
CREATE INDEX outbox_unsent_idx ON outbox (created_at) WHERE sent_at IS NULL;
