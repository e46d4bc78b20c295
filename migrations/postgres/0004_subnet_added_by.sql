-- The node that added a subnet (an agent's Docker plugin, `docker network
-- create --subnet`); NULL for the admin's and the default subnet. Counts
-- against the coordinator's --node-subnet-quota: every subnet is a bridge and
-- a VXLAN device on every host, so one node adding thousands would cost every
-- host. A removed node's subnets stay (their workloads may live elsewhere)
-- and no longer count.
ALTER TABLE subnets ADD COLUMN added_by BIGINT REFERENCES nodes(id) ON DELETE SET NULL;
