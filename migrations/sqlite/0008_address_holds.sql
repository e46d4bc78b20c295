-- Addresses a node's container released lately (a restart, a re-attach, a
-- CNI DEL before the ADD of the same pod): until `held_until` the address is
-- given automatically to no one else, the same container on the same node
-- gets it back, and no other node may ask for it by name. Without it the
-- lowest free address went to the next container at once, anywhere: peers
-- still holding the old owner's neighbour entries and connections reached
-- the new one, and a member watching the map could take a released address
-- for that traffic (found by a review, 2026-12-04).
CREATE TABLE address_holds (
    address     TEXT    PRIMARY KEY,                                       -- as allocations.address
    subnet_id   INTEGER NOT NULL REFERENCES subnets(id) ON DELETE CASCADE,
    node_id     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,   -- the node whose container released it
    container   TEXT    NOT NULL,                                          -- that container, as allocations.container
    released_at BIGINT  NOT NULL,                                          -- unix seconds
    held_until  BIGINT  NOT NULL                                           -- unix seconds
);
CREATE INDEX address_holds_by_subnet ON address_holds (subnet_id);
CREATE INDEX address_holds_by_node ON address_holds (node_id);
CREATE INDEX address_holds_by_expiry ON address_holds (held_until);
