-- Enrollment by EC2 instance identity: the SHA-256 of the signed identity document a
-- certificate was issued for (NULL for join tokens and renewals). A document that already
-- got a live certificate cannot get another one (a replay), unless the same key asks again.
ALTER TABLE agent_certs ADD COLUMN identity_sha256 bytea CHECK (length(identity_sha256) = 32);
CREATE INDEX agent_certs_identity ON agent_certs (identity_sha256) WHERE identity_sha256 IS NOT NULL;
