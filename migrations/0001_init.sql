-- teefleet's state. Postgres is the source of truth; every replica of the controller reads
-- and writes it, and agents' desired rule sets are derived from it.

-- Registered collectors: the allowlist of TEE gateways.
CREATE TABLE collectors (
    instance_id text PRIMARY KEY,
    ip text NOT NULL,
    subnet_id text NOT NULL,
    -- The Source/Dest Check value found at registration, restored when unused.
    original_source_dest_check boolean NOT NULL,
    -- What teefleet last observed or set: enabled, disabled or unknown.
    source_dest_check text NOT NULL DEFAULT 'unknown'
        CHECK (source_dest_check IN ('enabled', 'disabled', 'unknown')),
    ec2_error text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Source hosts, known from an agent's Hello or from EC2 when a session names them.
CREATE TABLE hosts (
    host_id text PRIMARY KEY,
    agent_version text NOT NULL DEFAULT '',
    addresses text[] NOT NULL DEFAULT '{}',
    -- The stream that last said Hello; a stale stream's disconnect must not clear a
    -- newer one's.
    connection_id bigint,
    connected boolean NOT NULL DEFAULT false,
    last_seen timestamptz,
    -- The compiled rule set and its version; the version strictly increases.
    desired_version bigint NOT NULL DEFAULT 0 CHECK (desired_version >= 0),
    desired_rules jsonb NOT NULL DEFAULT '[]',
    applied_version bigint NOT NULL DEFAULT 0 CHECK (applied_version >= 0),
    nacked_version bigint,
    last_error text,
    rule_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sessions (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    collector_id text NOT NULL REFERENCES collectors (instance_id),
    direction text NOT NULL CHECK (direction IN ('ingress', 'egress', 'both')),
    protocol text NOT NULL CHECK (protocol IN ('all', 'tcp', 'udp', 'icmp')),
    port_first integer,
    port_last integer,
    cidrs text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((port_first IS NULL) = (port_last IS NULL))
);

CREATE TABLE session_sources (
    session_id bigint NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    host_id text NOT NULL REFERENCES hosts (host_id),
    -- The host's first desired version that contains this session: the session is applied
    -- on the host once the host acknowledges this version or a later one.
    required_version bigint NOT NULL,
    PRIMARY KEY (session_id, host_id)
);

CREATE INDEX session_sources_host ON session_sources (host_id);
CREATE INDEX sessions_collector ON sessions (collector_id);
