-- What a collector counts, one row per (collector, source, session, address) instead of one
-- jsonb array per collector: a change rewrites the rows of the sources it touches, under
-- those sources' row locks, instead of reading, merging and rewriting the collector's whole
-- array (tens of thousands of entries) while holding the collector's row, which every
-- change of a session to that collector had to wait for in turn.
CREATE TABLE collector_arrivals (
    collector text NOT NULL,
    source text NOT NULL,
    session text NOT NULL,
    addr inet NOT NULL,
    vni integer,
    PRIMARY KEY (source, collector, session, addr)
);
CREATE INDEX collector_arrivals_collector ON collector_arrivals (collector);

INSERT INTO collector_arrivals (collector, source, session, addr, vni)
SELECT h.host_id, a.source, a.session, a."from"::inet, a.vni
FROM hosts h, jsonb_to_recordset(h.desired_arrivals) AS a(session text, source text, "from" text, vni integer)
ON CONFLICT DO NOTHING;

ALTER TABLE hosts DROP COLUMN desired_arrivals;
