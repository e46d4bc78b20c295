-- The highest id each of these tables has given, deleted rows' included, so
-- that none is given again: SQLite gives a new row the highest id in the
-- table plus one, so the newest subnet, allocation or DNS record removed
-- lent its id to the next one, and a watcher or a script that kept an id
-- (MapChange.subnet_removed, Allocation.subnet_id) took the new row for the
-- old one (found by a review, 2026-12-05). Node ids were kept apart already
-- (they count removed_nodes). Every insert takes its id from here.
CREATE TABLE id_floors (
    tbl   TEXT   PRIMARY KEY, -- subnets, allocations or dns_records
    last  BIGINT NOT NULL     -- the highest id given
);
-- A table that never had a row needs none (an empty database stays empty).
INSERT INTO id_floors (tbl, last) SELECT 'subnets', MAX(id) FROM subnets HAVING MAX(id) IS NOT NULL;
INSERT INTO id_floors (tbl, last) SELECT 'allocations', MAX(id) FROM allocations HAVING MAX(id) IS NOT NULL;
INSERT INTO id_floors (tbl, last) SELECT 'dns_records', MAX(id) FROM dns_records HAVING MAX(id) IS NOT NULL;
