-- Names a node's container released lately (see
-- migrations/sqlite/0007_dns_holds.sql for why).
CREATE TABLE dns_holds (
    name        TEXT    PRIMARY KEY,                                    -- fully qualified, as dns_records.name
    node_id     BIGINT  NOT NULL REFERENCES nodes(id) ON DELETE CASCADE, -- the node whose container released it
    released_at BIGINT  NOT NULL,                                       -- unix seconds
    held_until  BIGINT  NOT NULL                                        -- unix seconds
);
CREATE INDEX dns_holds_by_node ON dns_holds (node_id);
