-- The approver's identity at an approval (issue 15, item 1): principals and
-- token limit as JSON of authz.Subject, '' when not recorded (approvals
-- given before this migration). A scheduled request's start asks again,
-- with today's role bindings, whether each approver still may approve on
-- its target; an approval without a recorded subject counts for nothing
-- there (fail closed).
ALTER TABLE approvals ADD COLUMN subject TEXT NOT NULL DEFAULT '';

-- schedule_id: the recurring schedule whose occurrence a request is ('' for
-- none). Deleting a schedule revokes its occurrences that have not started
-- (produced recur.Lead ahead, they would open after the deletion).
ALTER TABLE requests ADD COLUMN schedule_id TEXT NOT NULL DEFAULT '';
CREATE INDEX requests_schedule ON requests(schedule_id) WHERE schedule_id <> '';
