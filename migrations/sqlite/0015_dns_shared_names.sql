-- Names an admin opened to every node's containers (`weavectl dns share`):
-- containers on several hosts under one name answer it in turn (Weave Net's
-- round robin across hosts). Any other name stays its first node's: a node
-- may not add a name another node's container or an external record holds
-- (a member would otherwise take a share of any service's traffic).
CREATE TABLE dns_shared_names (
    name      TEXT   PRIMARY KEY, -- fully qualified, as dns_records.name
    shared_at BIGINT NOT NULL     -- unix seconds
);
