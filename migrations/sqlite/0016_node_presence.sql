-- Whether each node holds a map watch, and when a coordinator last saw it
-- (`weavectl node ls`: connected, or last seen when). Written when a watch
-- opens, every 60 s while it stays open and when it ends, outside the change
-- log: no map revision, nothing sent to the agents. A node with watching set
-- and seen_at older than two refreshes had a coordinator die under its watch.
CREATE TABLE node_presence (
    node_id  BIGINT  PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    watching BOOLEAN NOT NULL,
    seen_at  BIGINT  NOT NULL -- unix seconds
);
