-- A host that is a registered VXLAN collector gets that in its desired set, so its agent
-- takes clones on UDP 4789 and offers them decapsulated. Part of the set, and versioned
-- with it: the agent hears of it as of any other change.
ALTER TABLE hosts ADD COLUMN desired_collector boolean NOT NULL DEFAULT false;
