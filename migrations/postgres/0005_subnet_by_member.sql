-- Whether a node (not the admin) added the subnet. `added_by` names the node
-- but is cleared when that node is removed (its foreign key), and a subnet
-- must not become the admin's then: agents trust a member's subnet less near
-- their LAN (a removed member's subnet even less). Set at insert, never
-- changed. Subnets whose node was removed before this migration cannot be
-- told apart from the admin's any more; remove them if in doubt.
ALTER TABLE subnets ADD COLUMN by_member BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE subnets SET by_member = TRUE WHERE added_by IS NOT NULL;
