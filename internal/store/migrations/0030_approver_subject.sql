-- The approver's identity at an approval (issue 15, item 1): principals and
-- token limit as JSON of authz.Subject, '' when not recorded (approvals
-- given before this migration). A scheduled request's start asks again,
-- with today's role bindings, whether each approver still may approve on
-- its target; an approval without a recorded subject counts for nothing
-- there (fail closed).
ALTER TABLE approvals ADD COLUMN subject TEXT NOT NULL DEFAULT '';
