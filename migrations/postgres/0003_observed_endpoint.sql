-- The endpoint a node was seen at: the source address of its last join or
-- UpdateEndpoints (behind a NAT, the NAT's public address) with the port of
-- its first endpoint of that family; '' when it is one of its own endpoints.
ALTER TABLE nodes ADD COLUMN observed TEXT NOT NULL DEFAULT '';
