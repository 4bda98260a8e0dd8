-- Detection quality: uncertain detections for human review (GDPR Art. 22 oversight), and the
-- reviews people record. An uncertain detection was redacted all the same; the flag only asks a
-- person to look. The guard's result lives in the artifact's params (params.guard).

ALTER TABLE detections ADD COLUMN uncertain boolean NOT NULL DEFAULT false;
CREATE INDEX detections_uncertain_idx ON detections (job_id) WHERE uncertain;

CREATE TABLE reviews (
    id           bigserial PRIMARY KEY,
    source_id    uuid NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    reviewed_by  text NOT NULL,
    reviewed_at  timestamptz NOT NULL DEFAULT now(),
    note         text NOT NULL DEFAULT ''
);
CREATE INDEX reviews_source_idx ON reviews (source_id);
