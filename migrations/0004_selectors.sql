-- Session selectors: sources chosen by EC2 tag, re-resolved as instances appear and go away.

-- An instance must carry every tag of its session (they AND together, as EC2 filters do).
-- One value per key: an instance has one value for each key, so two could never match.
-- The CHECKs repeat EC2's limits, which the model enforces.
CREATE TABLE session_selectors (
    session_id bigint NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    key text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 128),
    value text NOT NULL CHECK (char_length(value) <= 256),
    PRIMARY KEY (session_id, key)
);

-- How a source came into its session: named by the operator, or matched by the session's
-- tags. Re-resolution adds and removes 'tag' rows only, so a named source stays until its
-- session is deleted; a host both named and matched is 'named'.
ALTER TABLE session_sources
    ADD COLUMN origin text NOT NULL DEFAULT 'named' CHECK (origin IN ('named', 'tag'));

ALTER TABLE sessions
    -- The operator accepted sources in another subnet than the collector's. Re-resolution
    -- skips such instances unless this is set, as creating the session refused them.
    ADD COLUMN allow_routed boolean NOT NULL DEFAULT false,
    -- Why the last re-resolution of the session's tags was not applied in full (EC2 could
    -- not be reached, instances skipped); NULL when it was.
    ADD COLUMN resolve_problem text;

