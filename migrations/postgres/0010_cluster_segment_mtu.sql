-- One MTU for every segment on every host, recorded when the cluster is
-- created (`coordinator serve --mtu`, default 1370: a 1500-byte underlay's).
-- Before, each agent derived its segments' MTU from its own underlay: a host
-- on a 1400-byte link made its segments 1270 while the others made 1370,
-- and frames between 1271 and 1370 bytes sent to its workloads were lost
-- with no error (ICMP from the host cannot enter a segment it is not exposed
-- on; found by a review, 2026-12-04). 0: not recorded (a cluster created
-- before), each host derives its own as before until `--mtu` is given.
ALTER TABLE cluster ADD COLUMN segment_mtu BIGINT NOT NULL DEFAULT 0;
