-- How far the agent replies emailed to the customer go, set once the mail server took the mail
-- (mailed_seq is set when the mail is queued): the dashboard shows "Emailed" under that reply.
ALTER TABLE conversation_reads ADD COLUMN emailed_seq bigint NOT NULL DEFAULT 0;
