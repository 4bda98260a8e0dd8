-- Accountability (issue 19): purpose and legal basis on every source, consent records, and the
-- legal holds that forbid revealing anyone from the raw original.

-- Consent (Art. 6(1)(a), 7): one row per consent given, kept minimal. `ref` is the controller's
-- own reference (a form number, a study participant code); `subject` is optional and must be a
-- reference too (a participant id, never a name or an e-mail address: the row outlives the
-- recordings it covers). `wording_version` is the version of the text shown to the subject,
-- so the controller can prove what was agreed to. A withdrawn consent stays on record (the
-- proof of withdrawal) with who recorded it and why.
CREATE TABLE consents (
    ref                text PRIMARY KEY CHECK (length(btrim(ref)) > 0),
    subject            text,
    scope              text,
    wording_version    text,
    given_at           timestamptz NOT NULL DEFAULT now(),
    recorded_by        text NOT NULL,
    expires_at         timestamptz,
    withdrawn_at       timestamptz,
    withdrawn_by       text,
    withdrawal_reason  text,
    CHECK ((withdrawn_at IS NULL) = (withdrawn_by IS NULL)),
    CHECK (expires_at IS NULL OR expires_at > given_at)
);

-- What each source was processed for and on what ground, copied from its policy at ingest (the
-- policy JSON holds it as well; these columns let the record of processing group by them), and
-- the consent it was ingested under. The consent link stays on the tombstone of an erased
-- source: it is a reference, not personal data, and proves the withdrawal was carried out.
ALTER TABLE sources ADD COLUMN purpose text;
ALTER TABLE sources ADD COLUMN legal_basis text;
ALTER TABLE sources ADD COLUMN consent_ref text REFERENCES consents (ref);
CREATE INDEX sources_consent_idx ON sources (consent_ref) WHERE consent_ref IS NOT NULL;

-- A hold may forbid `veil dsar --reveal` (an investigation that must not see the raw original
-- unredacted, or whose evidence must not be read again).
ALTER TABLE legal_holds ADD COLUMN forbids_reveal boolean NOT NULL DEFAULT false;
