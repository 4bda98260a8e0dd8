-- Crypto-shredding: one AES-256-GCM data key per source, kept apart from the ledger in a schema
-- of its own (grant it to the producer and worker roles only; an operator reading the ledger
-- never needs it). Destroying a key (key := NULL) makes every stored copy of the raw original
-- unreadable, in S3 replicas and S3 backups alike. PostgreSQL's own backups keep the key until
-- they expire: see README, "Crypto-shredding".

CREATE SCHEMA keyring;

CREATE TABLE keyring.data_keys (
    source_id     uuid PRIMARY KEY,
    key           bytea CHECK (key IS NULL OR octet_length(key) = 32),
    created_at    timestamptz NOT NULL DEFAULT now(),
    destroyed_at  timestamptz,
    destroyed_by  text,
    CHECK ((key IS NULL) = (destroyed_at IS NOT NULL))
);

-- Set when a source is erased: the row stays as a tombstone without personal data.
ALTER TABLE sources ADD COLUMN erased_at timestamptz;
