-- The highest id each of these tables has given, deleted rows' included, so
-- that none is given again (SQLite, beside it, gave the newest removed row's
-- id to the next one; both engines take ids from here now, one rule for
-- both). Begun at what the identity sequences gave. Every insert takes its
-- id from here (inserts are serialized by the write lock).
CREATE TABLE id_floors (
    tbl   TEXT   PRIMARY KEY, -- subnets, allocations or dns_records
    last  BIGINT NOT NULL     -- the highest id given
);
-- A table that never had a row needs none (an empty database stays empty,
-- as `coordinator migrate` wants its target).
INSERT INTO id_floors (tbl, last) SELECT t, n FROM (
    SELECT 'subnets' AS t, GREATEST((SELECT MAX(id) FROM subnets),
        pg_sequence_last_value(pg_get_serial_sequence('subnets', 'id'))) AS n
    UNION ALL
    SELECT 'allocations', GREATEST((SELECT MAX(id) FROM allocations),
        pg_sequence_last_value(pg_get_serial_sequence('allocations', 'id')))
    UNION ALL
    SELECT 'dns_records', GREATEST((SELECT MAX(id) FROM dns_records),
        pg_sequence_last_value(pg_get_serial_sequence('dns_records', 'id')))
) AS floors WHERE n IS NOT NULL;
