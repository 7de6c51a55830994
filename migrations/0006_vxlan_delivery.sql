-- VXLAN delivery: how each collector takes its clones, and one VNI per session.

-- Collectors registered before this release were set up for raw TEE and keep it; new ones
-- take VXLAN unless the operator says otherwise.
ALTER TABLE collectors ADD COLUMN encap text NOT NULL DEFAULT 'none' CHECK (encap IN ('vxlan', 'none'));
ALTER TABLE collectors ALTER COLUMN encap SET DEFAULT 'vxlan';

-- Every live session has its own VNI (24 bits, 0 is not one), whatever its collector's
-- encapsulation, so switching a collector to VXLAN needs no renumbering.
ALTER TABLE sessions ADD COLUMN vni integer CHECK (vni BETWEEN 1 AND 16777215);
UPDATE sessions s SET vni = n.rn
FROM (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM sessions) n
WHERE n.id = s.id;
ALTER TABLE sessions ALTER COLUMN vni SET NOT NULL;
CREATE UNIQUE INDEX sessions_vni ON sessions (vni);
