-- Which node added a subnet, for good: `added_by` names it but is cleared
-- when that node is removed (its foreign key: the quota stops counting it),
-- and a subnet must not become the admin's then: agents trust a member's
-- subnet less near their LAN. `origin_node` keeps the node's id (no foreign
-- key; a later node may be given the same id) and `by_member` says a node
-- added it; both are set at insert and never changed. Subnets whose node
-- was removed before this migration cannot be told apart from the admin's
-- any more; remove them if in doubt.
ALTER TABLE subnets ADD COLUMN by_member BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE subnets ADD COLUMN origin_node INTEGER;
UPDATE subnets SET by_member = TRUE, origin_node = added_by WHERE added_by IS NOT NULL;
