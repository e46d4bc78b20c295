-- Nodes an admin removed, remembered by their last credential (see
-- migrations/sqlite/0002_removed_nodes.sql for why).
CREATE TABLE removed_nodes (
    credential_hash TEXT    PRIMARY KEY,  -- SHA-256 (hex) of the removed node's last credential
    node_id         BIGINT  NOT NULL,     -- the node's id when it was removed
    name            TEXT    NOT NULL,     -- the node's name when it was removed
    removed_at      BIGINT  NOT NULL      -- unix seconds
);
