-- Access control: the controller's CA, API and join tokens, the certificates issued to
-- agents, and the audit log.

-- One row: the CA every replica signs with. The key is PKCS#8 DER, sealed (AES-256-GCM with
-- a key derived from --ca-key-secret) when the operator gave a secret.
CREATE TABLE pki (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    ca_cert_pem text NOT NULL,
    ca_key bytea NOT NULL,
    key_sealed boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Bearer tokens of operators and join tokens of agents. Only a SHA-256 of the secret is
-- kept: secrets are 256 random bits, so a fast hash is enough and lookups stay indexed.
CREATE TABLE tokens (
    id text PRIMARY KEY,
    secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
    role text NOT NULL CHECK (role IN ('agent', 'viewer', 'operator', 'admin')),
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by text NOT NULL,
    -- NULL: never (only the bootstrap token).
    expires_at timestamptz,
    -- Enrollments left (agent tokens); NULL: unlimited.
    uses_left integer CHECK (uses_left >= 0),
    revoked_at timestamptz
);

-- Client certificates issued to agents, by the SHA-256 of their DER: the stream checks the
-- presented certificate here, so revoking is one UPDATE and takes effect at once.
CREATE TABLE agent_certs (
    fingerprint bytea PRIMARY KEY CHECK (length(fingerprint) = 32),
    host_id text NOT NULL,
    not_after timestamptz NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now(),
    -- The join token it was enrolled with; NULL for a renewal.
    token_id text REFERENCES tokens (id) ON DELETE SET NULL,
    revoked_at timestamptz
);
CREATE INDEX agent_certs_host ON agent_certs (host_id);

-- Every mutation, written in the transaction of the change it records (or on its own when
-- the change failed). Append-only: the trigger refuses UPDATE, DELETE and TRUNCATE.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    peer text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    result text NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
