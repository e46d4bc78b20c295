-- Nodes that leave for good without a `weavectl node rm` (an autoscaled
-- cloud node, a Kubernetes node scaled down): a token made with
-- `weavectl token create --forget-after <duration>` gives every node that
-- joins with it that duration (seconds), and the coordinator removes such a
-- node, with every address and DNS record it held, once it has not held a
-- map watch for that long. 0: kept until removed (every node that existed
-- before, and tokens made without the flag).
ALTER TABLE join_tokens ADD COLUMN forget_after BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN forget_after BIGINT NOT NULL DEFAULT 0;
-- A node the coordinator forgot (above) rather than an admin removed: its
-- agent, if it comes back, tears down and may join again with its token.
ALTER TABLE removed_nodes ADD COLUMN forgotten BOOLEAN NOT NULL DEFAULT FALSE;
