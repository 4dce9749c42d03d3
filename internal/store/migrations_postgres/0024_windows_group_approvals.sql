-- Time windows and approvals by group (issue 15, items 2 and 4).
-- window_end: when a grant's deadline was clipped to the end of a rule's
-- time window, that end (ms); NULL when it was not clipped.
ALTER TABLE requests ADD COLUMN window_end BIGINT;
-- approval_groups: the approvals by group the request needs, as JSON
-- [{"from": "group:dba", "count": 1}, ...], fixed when it is created; '' for none.
ALTER TABLE requests ADD COLUMN approval_groups TEXT NOT NULL DEFAULT '';
-- member: the groups or roles of the request's needs the approver belonged
-- to when approving, as a JSON list; '' for none.
ALTER TABLE approvals ADD COLUMN member TEXT NOT NULL DEFAULT '';
