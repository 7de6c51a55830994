-- Throttles, dual-stack collectors, and what agents report about their hosts: the
-- dataplane, drift repairs, per-session counters and recent events.

-- The throttle, in the model's units (parts per million, packets per second); NULL means
-- every packet and no cap. The CHECKs repeat the model's ranges.
ALTER TABLE sessions
    ADD COLUMN sample_ppm integer CHECK (sample_ppm BETWEEN 1 AND 1000000),
    ADD COLUMN max_pps integer CHECK (max_pps BETWEEN 1 AND 1000000);

-- The address IPv6 traffic is cloned to; NULL when the collector has none.
ALTER TABLE collectors
    ADD COLUMN ipv6 inet CHECK (family(ipv6) = 6 AND masklen(ipv6) = 128);

ALTER TABLE hosts
    -- As the agent last reported it (Hello or Health); NULL until it does.
    ADD COLUMN dataplane jsonb,
    -- The agent's own count, so it restarts from zero when the agent does.
    ADD COLUMN drift_repairs bigint NOT NULL DEFAULT 0 CHECK (drift_repairs >= 0),
    -- The per-session counters of the last Health: a snapshot, replaced each time.
    ADD COLUMN counters jsonb NOT NULL DEFAULT '[]';

-- What agents did or saw on their own. Only the most recent few per host are kept: the
-- store trims older ones whenever it adds one.
CREATE TABLE host_events (
    id bigserial PRIMARY KEY,
    host_id text NOT NULL REFERENCES hosts (host_id) ON DELETE CASCADE,
    kind text NOT NULL,
    message text NOT NULL,
    -- By the agent's clock.
    at timestamptz NOT NULL,
    received timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX host_events_host ON host_events (host_id, id DESC);
