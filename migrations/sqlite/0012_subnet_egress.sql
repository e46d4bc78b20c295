-- A subnet whose workloads leave the overlay through their own host: each
-- host exposed on it routes them to anything outside weave's ranges and
-- masquerades them (`weavectl subnet add --egress`, `subnet set --egress`),
-- and an attach there gives the container a default route through its host
-- (Kubernetes pods reaching Services, DNS and the outside world). Off for
-- every subnet that existed before.
ALTER TABLE subnets ADD COLUMN egress BOOLEAN NOT NULL DEFAULT FALSE;
