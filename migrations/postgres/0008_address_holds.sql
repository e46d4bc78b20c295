-- Addresses a node's container released lately (see
-- migrations/sqlite/0008_address_holds.sql for why).
CREATE TABLE address_holds (
    address     TEXT    PRIMARY KEY,                                      -- as allocations.address
    subnet_id   BIGINT  NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
    node_id     BIGINT  NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,  -- the node whose container released it
    container   TEXT    NOT NULL,                                         -- that container, as allocations.container
    released_at BIGINT  NOT NULL,                                         -- unix seconds
    held_until  BIGINT  NOT NULL                                          -- unix seconds
);
CREATE INDEX address_holds_by_subnet ON address_holds (subnet_id);
CREATE INDEX address_holds_by_node ON address_holds (node_id);
CREATE INDEX address_holds_by_expiry ON address_holds (held_until);
