-- weave coordinator schema. Every change to the network map bumps
-- cluster.revision and appends one row to map_events in the same transaction.
-- Addresses are stored in canonical text form (Rust's Display of IpAddr), so a
-- UNIQUE text column is a UNIQUE address.

CREATE TABLE cluster (
    id          INTEGER PRIMARY KEY CHECK (id = 1), -- exactly one row
    range_cidr  TEXT    NOT NULL,  -- the allocation range (--range)
    node_range  TEXT    NOT NULL,  -- the block node addresses come from; no subnet may overlap it
    node_first  TEXT    NOT NULL,  -- node_range's first address as 32 hex digits (IPv4 mapped into IPv6), for the overlap trigger
    node_last   TEXT    NOT NULL,  -- node_range's last address, same form
    dns_domain  TEXT    NOT NULL,  -- e.g. 'weave.local.'
    revision    BIGINT  NOT NULL,  -- revision of the network map; +1 per change
    created_at  BIGINT  NOT NULL   -- unix seconds of the first start
);

CREATE TABLE admin_credentials (
    id          INTEGER PRIMARY KEY,
    secret_hash TEXT    NOT NULL UNIQUE, -- SHA-256 (hex) of the admin secret; the secret itself is only in the 0600 file
    created_at  BIGINT  NOT NULL         -- unix seconds
);

CREATE TABLE join_tokens (
    id          TEXT    PRIMARY KEY,     -- public token id (16 hex digits), shown by `weavectl token ls`
    secret_hash TEXT    NOT NULL,        -- SHA-256 (hex) of the token secret
    description TEXT    NOT NULL DEFAULT '', -- free text from `token create --description`
    created_at  BIGINT  NOT NULL,        -- unix seconds
    expires_at  BIGINT,                  -- unix seconds; NULL = never expires
    uses_left   INTEGER CHECK (uses_left IS NULL OR uses_left >= 0), -- joins still allowed; NULL = unlimited
    uses        INTEGER NOT NULL DEFAULT 0, -- nodes that joined with it
    revoked_at  BIGINT                   -- unix seconds; NULL = not revoked
);

CREATE TABLE nodes (
    id              INTEGER PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,  -- host name chosen at join
    public_key      BLOB    NOT NULL UNIQUE CHECK (length(public_key) = 32), -- X25519 public key; there is no column for a private key
    endpoints       TEXT    NOT NULL DEFAULT '', -- comma-separated ip:port where peers reach its WireGuard
    address         TEXT    NOT NULL UNIQUE,  -- overlay node address, from cluster.node_range
    credential_hash TEXT    NOT NULL UNIQUE,  -- SHA-256 (hex) of the node's bearer credential
    joined_via      TEXT    REFERENCES join_tokens(id) ON DELETE SET NULL, -- token used at the first join
    joined_at       BIGINT  NOT NULL,         -- unix seconds of the first join
    updated_at      BIGINT  NOT NULL          -- unix seconds of the last join or endpoint change
);

CREATE TABLE subnets (
    id          INTEGER PRIMARY KEY,
    cidr        TEXT    NOT NULL UNIQUE,  -- canonical network, e.g. '10.2.3.0/24'
    name        TEXT    UNIQUE,           -- optional label; NULL = none
    first_key   TEXT    NOT NULL,         -- network address as 32 hex digits (IPv4 mapped into IPv6): text order = numeric order
    last_key    TEXT    NOT NULL,         -- last address of the subnet, same form
    is_default  BOOLEAN NOT NULL DEFAULT FALSE, -- the subnet `net:default` means
    vni         INTEGER NOT NULL UNIQUE CHECK (vni > 0 AND vni < 16777216), -- L2 segment id (VXLAN VNI), derived from the cidr
    created_at  BIGINT  NOT NULL          -- unix seconds
);
CREATE UNIQUE INDEX subnets_one_default ON subnets (is_default) WHERE is_default;

-- The code checks overlaps and names the conflicting subnet; these triggers make
-- an overlapping subnet impossible to commit even for a buggy caller.
CREATE TRIGGER subnets_no_overlap BEFORE INSERT ON subnets
WHEN EXISTS (SELECT 1 FROM subnets s WHERE s.first_key <= NEW.last_key AND NEW.first_key <= s.last_key)
BEGIN
    SELECT RAISE(ABORT, 'subnet overlaps an existing subnet');
END;
CREATE TRIGGER subnets_not_in_node_range BEFORE INSERT ON subnets
WHEN EXISTS (SELECT 1 FROM cluster c WHERE c.node_first <= NEW.last_key AND NEW.first_key <= c.node_last)
BEGIN
    SELECT RAISE(ABORT, 'subnet overlaps the node address block');
END;

CREATE TABLE allocations (
    id          INTEGER PRIMARY KEY,
    subnet_id   INTEGER NOT NULL REFERENCES subnets(id) ON DELETE CASCADE, -- subnet the address is in
    node_id     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,   -- host of the container
    container   TEXT    NOT NULL,         -- container id chosen by the agent (netns, CNI id, or name)
    address     TEXT    NOT NULL UNIQUE,  -- the address; UNIQUE is what forbids duplicates
    created_at  BIGINT  NOT NULL,         -- unix seconds
    UNIQUE (node_id, container, subnet_id) -- one address per container per subnet: allocation is idempotent
);
CREATE INDEX allocations_by_subnet ON allocations (subnet_id);

CREATE TABLE dns_records (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL,       -- fully qualified, lower case, trailing dot: 'web.weave.local.'
    address       TEXT    NOT NULL,       -- IPv4 or IPv6 address it resolves to
    allocation_id INTEGER REFERENCES allocations(id) ON DELETE CASCADE, -- owning container's allocation; NULL = external record added by an admin
    created_at    BIGINT  NOT NULL,       -- unix seconds
    UNIQUE (name, address)
);
CREATE INDEX dns_records_by_address ON dns_records (address);

CREATE TABLE map_events (
    revision    BIGINT  PRIMARY KEY,      -- cluster.revision after this change
    change      BLOB    NOT NULL,         -- the change, encoded as protobuf weave.v1.MapChange (what watchers receive)
    created_at  BIGINT  NOT NULL          -- unix seconds
);
