-- A transfer over the review amount goes to manual review before its score is looked at, so one that scores in
-- the conditions band could only be approved as plain cleared, and settled without its conditions marker. A
-- review now approves it with conditions: requires_manual_review -> cleared_with_conditions, for the reason
-- REVIEW_APPROVED_WITH_CONDITIONS. The reference tables restate the core's; their triggers refuse any other change.
ALTER TABLE transaction_status_transitions DISABLE TRIGGER transaction_status_transitions_read_only;
ALTER TABLE transaction_status_reasons DISABLE TRIGGER transaction_status_reasons_read_only;
INSERT INTO reason_codes (reason_code) VALUES ('REVIEW_APPROVED_WITH_CONDITIONS');
INSERT INTO transaction_status_transitions (from_status, to_status)
VALUES ('requires_manual_review', 'cleared_with_conditions');
INSERT INTO transaction_status_reasons (status, reason_code)
VALUES ('cleared_with_conditions', 'REVIEW_APPROVED_WITH_CONDITIONS');
ALTER TABLE transaction_status_transitions ENABLE TRIGGER transaction_status_transitions_read_only;
ALTER TABLE transaction_status_reasons ENABLE TRIGGER transaction_status_reasons_read_only;

-- An approval with conditions, like one without, waits for a re-drive of its hour: no stage publishes it.
CREATE OR REPLACE VIEW transactions_waiting AS
SELECT t.transaction_id, t.status,
       CASE
           WHEN t.status = 'pending' AND t.published_at IS NULL THEN 'produce'
           WHEN t.status = 'pending' THEN 'clear'
           WHEN t.status_reason_code IN ('REVIEW_APPROVED', 'REVIEW_APPROVED_WITH_CONDITIONS') THEN 'window re-drive'
           WHEN t.status IN ('cleared', 'cleared_with_conditions') AND t.published_at IS NULL THEN 'window re-drive'
           WHEN t.status IN ('cleared', 'cleared_with_conditions') THEN 'settle'
           ELSE 'manual review'
       END AS waits_for,
       coalesce(t.status_changed_at, t.created_at) AS since,
       t.created_at
  FROM transactions t JOIN transaction_statuses s ON s.status = t.status
 WHERE NOT s.terminal;
