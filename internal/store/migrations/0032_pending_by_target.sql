-- An agent's report activates the pending requests of its target (and of the
-- targets behind it, for a gateway). Without an index that leads with the
-- target among pending requests, that read passed over every pending request
-- of every target (index requests_state) or every request the target ever had
-- (requests_target): under load, with thousands pending, it was the largest
-- part of a report, and it grew as a backlog did. Only pending rows are in it.
CREATE INDEX requests_pending_target ON requests(target) WHERE state = 'pending';
