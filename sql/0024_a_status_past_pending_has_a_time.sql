-- A transaction past pending keeps the time of its last status change: clear republishes it as the outcome's
-- cleared_at, which the contract requires, and include/rewrite_records.py --since selects by it. One set to NULL by
-- hand failed clear's batch on every retry, the stage standing behind it; one set to another time moved the
-- transaction out of (or into) a rewrite's reach, unaudited. The time now changes only with the status (whose
-- change stamps it: 0013), and a transaction past pending has one. A row the pipeline changed before 0003 stamped
-- it may have none: it gets the time its audit trail gives for that status, or else its creation time. The
-- function runs only for an update it refuses; the pipeline's status changes pay for the WHEN alone.
UPDATE transactions t
   SET status_changed_at = coalesce((SELECT max(a.changed_at) FROM transaction_audit a
                                      WHERE a.transaction_id = t.transaction_id AND a.new_status = t.status),
                                    t.created_at)
 WHERE t.status <> 'pending' AND t.status_changed_at IS NULL;
ALTER TABLE transactions
    ADD CONSTRAINT transactions_status_change_has_a_time CHECK (status = 'pending' OR status_changed_at IS NOT NULL);

CREATE FUNCTION transactions_refuse_status_time_without_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transaction % is %: its status time changes only with its status, as transaction_audit '
                    'records it', OLD.transaction_id, OLD.status USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER transactions_status_time_changes_with_status BEFORE UPDATE OF status_changed_at ON transactions
    FOR EACH ROW
    WHEN (OLD.status = NEW.status AND OLD.status_changed_at IS DISTINCT FROM NEW.status_changed_at)
    EXECUTE FUNCTION transactions_refuse_status_time_without_status_change();
