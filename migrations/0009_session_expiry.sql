-- A session created or updated with a lifetime deletes itself when it ends (the leader
-- checks for expired sessions every few seconds); NULL lives until deleted.
ALTER TABLE sessions ADD COLUMN expires_at timestamptz;
-- The expiry loop asks only for sessions that expire, most of them none.
CREATE INDEX sessions_expires_at ON sessions (expires_at) WHERE expires_at IS NOT NULL;
