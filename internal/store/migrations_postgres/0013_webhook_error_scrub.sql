-- PostgreSQL counterpart of migrations/0013_webhook_error_scrub.sql.
UPDATE outbox SET last_error = substr(last_error, 1, strpos(last_error, ': ') - 1)
WHERE last_error LIKE 'the receiver answered %: %';
