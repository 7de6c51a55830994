-- Raw (--encap none) sessions that mirror inbound traffic need their sources' Source/Dest
-- Check off, which the controller changes only when the session says so.
ALTER TABLE sessions ADD COLUMN disable_source_check boolean NOT NULL DEFAULT false;

-- Each source whose check teefleet changed: the value found before the first change,
-- restored when no session needs it off any more (by whichever replica leads then), and
-- what teefleet last observed or set.
CREATE TABLE source_checks (
    host_id text PRIMARY KEY,
    original boolean NOT NULL,
    state text NOT NULL DEFAULT 'unknown' CHECK (state IN ('enabled', 'disabled', 'unknown')),
    ec2_error text
);
