-- PostgreSQL counterpart of migrations/0037_grants_by_holder.sql: the
-- grants of a request are found by their target, requester and source (a
-- prefix of grants_key) and their request_id, so the index on request_id
-- alone goes.
DROP INDEX grants_request;
