-- A container's DNS records by its allocation: every release, node removal
-- and per-node DNS quota count finds them through this column, and every
-- delete from allocations checks it for the cascade. Without the index each
-- of those read the whole table under the store's one writer (a member
-- allocating and releasing named addresses at its rate limit held it for
-- ~5 ms a call at 50,000 records; found by a review, 2026-12-02).
CREATE INDEX dns_records_by_allocation ON dns_records (allocation_id);
