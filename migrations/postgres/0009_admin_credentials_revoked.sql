-- A rotated admin credential is kept, marked revoked, instead of deleted:
-- a coordinator started with a credential file that still holds it (one of
-- several coordinators sharing this database, whose file a rotation
-- through another one did not reach) made it the valid one again, and the
-- current one invalid (found by a review, 2026-12-04). Now such a start
-- keeps the current credential; only a credential never revoked may
-- replace it (a deleted file's new one: an offline rotation).
ALTER TABLE admin_credentials ADD COLUMN revoked_at BIGINT;  -- unix seconds; NULL: the valid one
