-- The targets list reads each target's last activation: without this index
-- that query scanned every request (351 ms at 1,000 requests; 2.4 ms with it).
CREATE INDEX requests_target_activated ON requests(target, activated_at);
-- The sweeper deletes grants past their deadline after every change.
CREATE INDEX grants_expires ON grants(expires_at);
