-- One row per start of a coordinator on this database: the random history
-- id it serves the map under (NetworkMap.history) and the revision it began
-- at. A watch resumed with (revision R, history H) continues only if H is
-- here and no later history began before R: a backup restored and started
-- again begins a history at the backup's revision, so an agent that saw
-- revisions past it elsewhere gets a snapshot instead of this history's
-- changes, which bear the same numbers (found by a review, 2026-12-05).
CREATE TABLE histories (
    id          INTEGER PRIMARY KEY,
    history     BIGINT  NOT NULL UNIQUE, -- NetworkMap.history, as a signed 64-bit value
    since       BIGINT  NOT NULL,        -- cluster.revision when it began
    started_at  BIGINT  NOT NULL         -- unix seconds
);
