-- Hostile agents: versions belong to the controller, and a host has one identity.

-- Before this, an agent's Hello could set a host's desired version to anything below
-- 2^63 (the controller bumped it past the version the agent claimed), and the next
-- recompile's + 1 then overflowed, so every change touching that host failed. Such hosts
-- restart their numbering at 2^52: above any version a controller could have pushed
-- (that takes 2^52 changes), so whatever the host's agent holds, it gets a fresh push,
-- and below the new bound with room to spare. Their sessions need the new version.
UPDATE session_sources ss SET required_version = 4503599627370496
FROM hosts h
WHERE h.host_id = ss.host_id AND h.desired_version > 9007199254740991;
UPDATE hosts SET desired_version = 4503599627370496, applied_version = 0, nacked_version = NULL
WHERE desired_version > 9007199254740991;
-- Acknowledgements of versions never pushed were recorded as applied.
UPDATE hosts SET applied_version = 0 WHERE applied_version > desired_version;
UPDATE hosts SET nacked_version = NULL WHERE nacked_version > desired_version OR nacked_version < 0;

-- 2^53 - 1 is RuleSet::MAX_VERSION: exact in JSON, and far from overflowing.
ALTER TABLE hosts
    ADD CONSTRAINT hosts_desired_version_bound CHECK (desired_version <= 9007199254740991),
    ADD CONSTRAINT hosts_applied_not_ahead CHECK (applied_version <= desired_version);

-- A join token made for one host: it enrolls that host even while the host holds a live
-- certificate (a rebuilt host), and no other. NULL: any host without a live certificate.
ALTER TABLE tokens ADD COLUMN host_id text;

ALTER TABLE agent_certs
    -- SHA-256 of the certificate's SubjectPublicKeyInfo: an agent retrying an enrollment
    -- whose answer it lost proves with its CSR that it holds the same key.
    ADD COLUMN public_key_sha256 bytea CHECK (length(public_key_sha256) = 32),
    -- Why the certificate stopped being accepted: an operator revoked the host, a newer
    -- certificate of the host was used (renewed), or the host enrolled again with a
    -- token made for it (reenrolled).
    ADD COLUMN revoked_why text CHECK (revoked_why IN ('revoked', 'renewed', 'reenrolled'));
UPDATE agent_certs SET revoked_why = 'revoked' WHERE revoked_at IS NOT NULL;
ALTER TABLE agent_certs ADD CONSTRAINT agent_certs_revoked_why CHECK ((revoked_at IS NULL) = (revoked_why IS NULL));
