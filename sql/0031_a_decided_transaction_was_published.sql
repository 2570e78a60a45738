-- A produce run killed after the broker acknowledged a batch but before it recorded the batch published left its
-- rows unpublished on paper; clear then decided them from the messages, and no later produce run takes a row that
-- is no longer pending, so published_at stayed NULL for good: the rows stayed in transactions_unpublished, which
-- every produce run walks first, and the waiting view sent them to a re-drive while they waited for settle. The
-- pipeline's status changes now record what they imply, that the transaction was published (ledger.py); this
-- records it for the rows such a kill left, from the time the pipeline first decided them. (So the remark in 0028,
-- that a transaction clear decided before produce recorded it shows as waiting for a re-drive for the moment in
-- between, no longer holds.)
UPDATE transactions t
   SET published_at = a.changed_at
  FROM transaction_audit a
 WHERE t.published_at IS NULL AND t.status <> 'pending'
   AND a.transaction_id = t.transaction_id AND a.old_status = 'pending' AND a.dag_id IS NOT NULL;
