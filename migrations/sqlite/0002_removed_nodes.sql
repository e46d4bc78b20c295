-- Nodes an admin removed, remembered by their last credential: an agent that
-- was away when it happened learns on its next call that it was removed (and
-- stops), instead of taking "unknown credential" for an outage and retrying
-- for ever. A coordinator restored from an older backup has no such row, and
-- its agents keep retrying rather than tearing their network down.
CREATE TABLE removed_nodes (
    credential_hash TEXT    PRIMARY KEY,  -- SHA-256 (hex) of the removed node's last credential
    node_id         BIGINT  NOT NULL,     -- the node's id when it was removed
    name            TEXT    NOT NULL,     -- the node's name when it was removed
    removed_at      BIGINT  NOT NULL      -- unix seconds
);
