-- Grants for the watcher's tables (0009), in the style of 0008: one block per table, column
-- lists where a role may change only some columns. `veil watch` runs as veil_producer (it
-- ingests: no delete rights; the retention worker deletes the inbox copies); `veil status`
-- (veil_operator) shows the backlog; erasure (veil_retention) reads which versions a source had.

-- inbox_objects: one row per inbox object version handled, written with its source.
GRANT SELECT, INSERT, UPDATE (released_at) ON inbox_objects TO veil_producer;
GRANT SELECT ON inbox_objects TO veil_retention, veil_operator;

-- inbox_cursors: where a listing sweep stands, and the backlog `veil status` shows.
GRANT SELECT, INSERT, UPDATE ON inbox_cursors TO veil_producer;
GRANT SELECT ON inbox_cursors TO veil_operator;
