-- A re-drive (ledgerflow_produce_window, or a backfill of it) selects a transaction by the hour it was created in,
-- but the view showed only since when it waits: for one cleared, or approved by a review, that is the time of
-- its last status change, not its hour. The view now also gives its creation time. CREATE OR REPLACE VIEW may
-- only add columns at the end.
CREATE OR REPLACE VIEW transactions_waiting AS
SELECT t.transaction_id, t.status,
       CASE
           WHEN t.status = 'pending' AND t.published_at IS NULL THEN 'produce'
           WHEN t.status = 'pending' THEN 'clear'
           WHEN t.status_reason_code = 'REVIEW_APPROVED' THEN 'window re-drive'
           WHEN t.status IN ('cleared', 'cleared_with_conditions') THEN 'settle'
           ELSE 'manual review'
       END AS waits_for,
       coalesce(t.status_changed_at, t.created_at) AS since,
       t.created_at
  FROM transactions t JOIN transaction_statuses s ON s.status = t.status
 WHERE NOT s.terminal;
