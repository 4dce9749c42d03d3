-- Token lineage (issue 9, item 6): a token created with another token that
-- speaks for the same person (a personal token, a console session) records
-- that token as its parent. It never outlives the parent (CreateToken caps its
-- expiry) and is revoked with it, transitively, in the same transaction
-- (RevokeToken). NULL: a root token (a login, the first-start admin token, a
-- token an admin issued to a service or another user).
ALTER TABLE tokens ADD COLUMN parent_id TEXT;
CREATE INDEX tokens_parent ON tokens(parent_id);
