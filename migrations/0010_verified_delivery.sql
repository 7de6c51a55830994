-- Verified delivery: each collector's agent counts what arrives, per session and source
-- host, and the controller compares it with what the sources sent.

-- What a collector's agent counts, part of its versioned desired set like its rules.
ALTER TABLE hosts ADD COLUMN desired_arrivals jsonb NOT NULL DEFAULT '[]';

-- The share of clones a session may lose over the window before it is degraded.
ALTER TABLE sessions ADD COLUMN max_loss double precision NOT NULL DEFAULT 0.01
    CHECK (max_loss >= 0 AND max_loss <= 1);

-- Every agent's cumulative counters as reported in Health, with the time they were read
-- (the controller's clock: the report's arrival less the age the agent gives), kept for
-- a few windows. `sent`: [{session, packets}], `arrived`: [{session, source, packets}].
CREATE TABLE counter_samples (
    host_id text NOT NULL REFERENCES hosts (host_id) ON DELETE CASCADE,
    read_at timestamptz NOT NULL,
    sent jsonb NOT NULL DEFAULT '[]',
    arrived jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX counter_samples_host ON counter_samples (host_id, read_at);
CREATE INDEX counter_samples_age ON counter_samples (read_at);
