-- The "active legal hold" rule, written once: a hold is active until it is released. Every
-- reader (the purge's claim, `veil hold`, `veil status`, metrics, reports, `veil dsar --reveal`,
-- the inbox release) selects from this view instead of repeating `released_at IS NULL`. The view
-- belongs to veil_owner (veil_take_ownership), so a role needs SELECT on the view only.
CREATE VIEW active_legal_holds AS
    SELECT * FROM legal_holds WHERE released_at IS NULL;

GRANT SELECT ON active_legal_holds TO veil_producer, veil_worker, veil_retention, veil_operator;
