-- The pin (`sha256:<hex>` of the TLS key's SubjectPublicKeyInfo) the cluster
-- is served under: every token and credential carries it. A coordinator
-- whose tls/ holds another key refuses to serve this database. Two
-- coordinators started at once on an empty database each made a key; the
-- one that lost the race, restarted, served the cluster under its own pin
-- and replaced the admin credential (found by a review, 2026-12-05). NULL
-- for a cluster made before: the next start records its pin.
ALTER TABLE cluster ADD COLUMN pin TEXT;
