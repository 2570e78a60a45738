-- Every transaction ends settled or rejected, or is visibly waiting: this view lists the waiting ones, each with
-- what it waits for and since when (`make waiting` counts them). It scans the table (status is in no index, so
-- that status changes stay HOT updates), which suits a look now and then, not a query per batch.
--
-- What a transaction waits for follows from its status, whether produce has published it, and, for one cleared
-- by a review, that nothing publishes its outcome until a re-drive of its window (ledgerflow_produce_window)
-- has clear republish it.
CREATE VIEW transactions_waiting AS
SELECT t.transaction_id, t.status,
       CASE
           WHEN t.status = 'pending' AND t.published_at IS NULL THEN 'produce'
           WHEN t.status = 'pending' THEN 'clear'
           WHEN t.status_reason_code = 'REVIEW_APPROVED' THEN 'window re-drive'
           WHEN t.status IN ('cleared', 'cleared_with_conditions') THEN 'settle'
           ELSE 'manual review'
       END AS waits_for,
       coalesce(t.status_changed_at, t.created_at) AS since
  FROM transactions t JOIN transaction_statuses s ON s.status = t.status
 WHERE NOT s.terminal;
