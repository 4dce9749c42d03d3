-- PostgreSQL counterpart of migrations/0008_gateway_addresses.sql: a data
-- fix-up of rows written by earlier versions, which a PostgreSQL database
-- never held. Nothing to do.
SELECT 1;
