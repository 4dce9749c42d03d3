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

-- A target behind a gateway keeps all its addresses (IPv4 and IPv6 of a
-- dual-stack host) in addresses; address stays its first. Rows written
-- before held only address.
UPDATE targets SET addresses = json_array(address) WHERE gateway != '' AND address != '' AND addresses = '[]';
