-- Names an admin opened to every node's containers (see
-- migrations/sqlite/0015_dns_shared_names.sql for why).
CREATE TABLE dns_shared_names (
    name      TEXT   PRIMARY KEY, -- fully qualified, as dns_records.name
    shared_at BIGINT NOT NULL     -- unix seconds
);
