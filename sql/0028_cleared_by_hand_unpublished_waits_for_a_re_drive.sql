-- A transaction moved to cleared (or cleared with conditions) by hand before produce published it, or cleared by
-- the original system, is published by no stage: produce takes only pending ones, and clear and settle see only
-- what was published. The view said it waited for settle, for ever; it waits for a re-drive of its hour, as an
-- approved review does. (One cleared by clear between its publication and produce's record of it shows so for
-- the moment in between.)
CREATE OR REPLACE VIEW transactions_waiting AS
SELECT t.transaction_id, t.status,
       CASE
           WHEN t.status = 'pending' AND t.published_at IS NULL THEN 'produce'
           WHEN t.status = 'pending' THEN 'clear'
           WHEN t.status_reason_code = 'REVIEW_APPROVED' THEN 'window re-drive'
           WHEN t.status IN ('cleared', 'cleared_with_conditions') AND t.published_at IS NULL THEN 'window re-drive'
           WHEN t.status IN ('cleared', 'cleared_with_conditions') THEN 'settle'
           ELSE 'manual review'
       END AS waits_for,
       coalesce(t.status_changed_at, t.created_at) AS since,
       t.created_at
  FROM transactions t JOIN transaction_statuses s ON s.status = t.status
 WHERE NOT s.terminal;
