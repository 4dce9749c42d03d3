-- Unpublishing a port now deletes its mapping; delete the mappings left
-- behind by earlier versions (a port no longer published, or a target
-- without a policy), so gateways stop installing them.
DELETE FROM mappings WHERE NOT EXISTS (
    SELECT 1 FROM targets t, json_each(t.policy, '$.rules') r
    WHERE t.name = mappings.target
      AND json_extract(r.value, '$.publish') = 1
      AND json_extract(r.value, '$.port') = mappings.port
      AND json_extract(r.value, '$.protocol') = mappings.protocol
);
