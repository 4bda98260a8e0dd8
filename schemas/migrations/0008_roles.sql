-- Least privilege (issue 16): one PostgreSQL role per kind of process, and grants per table.
--
--   veil_owner      owns every table, function and schema; runs migrations. Not a superuser.
--   veil_producer   ingest: writes sources, jobs, keys, deadlines, outbox, audit.
--   veil_worker     image and video jobs, outbox relay, lease sweeper: reads keys, writes results.
--   veil_retention  purge, erasure, legal holds, inbox clean-up: the only one to destroy keys.
--   veil_operator   status, audit, export, DSAR, review: reads the ledger (never the keyring),
--                   records reviews, exports and erasure requests.
--
-- Roles are created here when missing (they are cluster-wide: several databases share them) as
-- LOGIN without a password: `veil stack up` relies on local trust auth; production sets each
-- role's password (docs/security.md). audit_events is owned by veil_owner and only INSERT and
-- SELECT are granted, so no runtime role can disable its triggers, and none is a superuser, so
-- none can SET session_replication_role.
--
-- Style for later migrations: a table gets ONE grant block, under a comment naming it, that
-- lists each role's privileges (column lists where a role may change only some columns); a table
-- with no line for a role is invisible to it. `veil db upgrade` hands every table to veil_owner
-- after each migration (veil_take_ownership below), whoever connected; a migration numbered
-- before 0008 (0006, 0007) adds its grant block to this file instead.

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['veil_owner', 'veil_producer', 'veil_worker', 'veil_retention',
                             'veil_operator'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS', r);
        END IF;
    END LOOP;
END $$;

-- Ownership: every table, view and function of the ledger and the keyring goes to veil_owner.
-- `veil db upgrade` calls this after every migration, so later tables follow whoever connects.
CREATE FUNCTION veil_take_ownership() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n
                 ON n.oid = c.relnamespace
                WHERE n.nspname IN ('public', 'keyring') AND c.relkind IN ('r', 'p', 'v', 'm')
                  AND pg_get_userbyid(c.relowner) <> 'veil_owner'
    LOOP
        EXECUTE format('ALTER TABLE %I.%I OWNER TO veil_owner', obj.nspname, obj.relname);
    END LOOP;
    FOR obj IN SELECT p.oid::regprocedure AS fn FROM pg_proc p JOIN pg_namespace n
                 ON n.oid = p.pronamespace
                WHERE n.nspname IN ('public', 'keyring')
                  AND pg_get_userbyid(p.proowner) <> 'veil_owner'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO veil_owner', obj.fn);
    END LOOP;
END $$;

DO $$
BEGIN
    EXECUTE format('GRANT CREATE, CONNECT, TEMPORARY ON DATABASE %I TO veil_owner',
                   current_database());
END $$;
ALTER SCHEMA public OWNER TO veil_owner;
ALTER SCHEMA keyring OWNER TO veil_owner;

REVOKE ALL ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON SCHEMA keyring FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO veil_producer, veil_worker, veil_retention, veil_operator;
GRANT USAGE ON SCHEMA keyring TO veil_producer, veil_worker, veil_retention;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO veil_producer, veil_worker, veil_retention,
    veil_operator;

-- Erasure requests: `veil erase` records one (operator); the retention worker carries it out.
-- A task that names no recorded, pending request does nothing.
CREATE TABLE erasure_requests (
    id            uuid PRIMARY KEY,
    source_ids    uuid[] NOT NULL,
    reason        text NOT NULL CHECK (reason <> ''),
    requested_by  text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    received_at   timestamptz,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    done_at       timestamptz,
    receipts      jsonb
);

-- Inbox copies: where an inbox ingest found the upload (bucket, full key, version), so that it
-- can be deleted once the raw copy is committed, and found again by an erasure.
ALTER TABLE sources ADD COLUMN inbox_bucket text;
ALTER TABLE sources ADD COLUMN inbox_key text;
ALTER TABLE sources ADD COLUMN inbox_version_id text;
-- Personal data in names is cleared with the raw original (the purge sets this).
ALTER TABLE sources ADD COLUMN names_cleared_at timestamptz;

-- schema_migrations
GRANT SELECT ON schema_migrations TO veil_operator;

-- audit_events: append-only for everyone
GRANT SELECT, INSERT ON audit_events TO veil_producer, veil_worker, veil_retention, veil_operator;

-- keyring.data_keys: written by the producer, read by the worker, destroyed by retention
GRANT SELECT, INSERT ON keyring.data_keys TO veil_producer;
GRANT SELECT ON keyring.data_keys TO veil_worker;
GRANT SELECT, UPDATE (key, destroyed_at, destroyed_by) ON keyring.data_keys TO veil_retention;

-- sources
GRANT SELECT, INSERT, UPDATE (duration_s, video, inbox_bucket, inbox_key, inbox_version_id,
                              purpose, legal_basis, consent_ref) ON sources TO veil_producer;
GRANT SELECT ON sources TO veil_worker, veil_operator;
GRANT SELECT, UPDATE (original_name, camera, captured_at, erased_at, names_cleared_at)
    ON sources TO veil_retention;

-- jobs
GRANT SELECT, INSERT ON jobs TO veil_producer;
GRANT SELECT, INSERT, UPDATE ON jobs TO veil_worker;
GRANT SELECT, UPDATE (state, finished_at, updated_at, lease_expires_at, error)
    ON jobs TO veil_retention;
GRANT SELECT ON jobs TO veil_operator;

-- artifacts
GRANT SELECT, INSERT, UPDATE ON artifacts TO veil_worker;
GRANT SELECT ON artifacts TO veil_producer, veil_retention, veil_operator;

-- detections
GRANT SELECT, INSERT, DELETE ON detections TO veil_worker;
GRANT SELECT, DELETE ON detections TO veil_retention;
GRANT SELECT ON detections TO veil_operator;

-- deletion_tasks
-- (the producer revives a done task: an upload intent or an inbox copy uploaded again)
GRANT SELECT, INSERT, UPDATE (due_at, reason, source_id, state, next_attempt_at, done_at,
                              attempts) ON deletion_tasks TO veil_producer;
GRANT SELECT, INSERT, UPDATE (due_at, reason, source_id) ON deletion_tasks TO veil_worker;
GRANT SELECT, INSERT, UPDATE ON deletion_tasks TO veil_retention;
GRANT SELECT ON deletion_tasks TO veil_operator;

-- legal_holds: only `veil hold` (which connects as veil_retention) changes them
GRANT SELECT, INSERT, UPDATE ON legal_holds TO veil_retention;
GRANT SELECT ON legal_holds TO veil_producer, veil_worker, veil_operator;

-- dead_letters
GRANT SELECT, INSERT ON dead_letters TO veil_worker;
GRANT SELECT ON dead_letters TO veil_operator;

-- outbox
GRANT SELECT, INSERT, UPDATE ON outbox TO veil_producer, veil_worker;
GRANT SELECT ON outbox TO veil_operator;

-- reviews
GRANT SELECT, INSERT ON reviews TO veil_operator;
GRANT SELECT, DELETE ON reviews TO veil_retention;

-- consents (0007): recorded and withdrawn by the operator (`veil consent`), read at ingest
GRANT SELECT, INSERT, UPDATE ON consents TO veil_operator;
-- The producer locks the consent row FOR SHARE while it links a source (a withdrawal waits);
-- PostgreSQL lets only a role with some UPDATE right lock a row, so it gets the key column,
-- which the foreign key of sources.consent_ref keeps from changing once a source links it.
GRANT SELECT, UPDATE (ref) ON consents TO veil_producer;
GRANT SELECT ON consents TO veil_retention;

-- erasure_requests
GRANT SELECT, INSERT ON erasure_requests TO veil_operator;
GRANT SELECT, UPDATE (state, done_at, receipts) ON erasure_requests TO veil_retention;
