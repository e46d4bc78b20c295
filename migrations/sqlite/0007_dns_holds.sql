-- Names a node's container released lately (a restart, a re-attach): until
-- `held_until` no other node may claim the name. Without it a member
-- watching the map claimed a restarting container's name in the gap between
-- release and re-allocation, answered for it, and the container's own
-- allocation then failed whole (found by a review, 2026-12-03).
CREATE TABLE dns_holds (
    name        TEXT    PRIMARY KEY,                                     -- fully qualified, as dns_records.name
    node_id     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE, -- the node whose container released it
    released_at BIGINT  NOT NULL,                                        -- unix seconds
    held_until  BIGINT  NOT NULL                                         -- unix seconds
);
CREATE INDEX dns_holds_by_node ON dns_holds (node_id);
