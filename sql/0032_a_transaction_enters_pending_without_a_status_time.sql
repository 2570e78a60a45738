-- A transaction enters the ledger without a status time, as it enters without a reason (0018): its first status
-- change stamps one. An insert could give a pending row any status_changed_at, 'infinity' or a date BC included,
-- which clear reads with every transaction of its batch and psycopg cannot: the batch failed on every run and
-- retry, so every transaction published after it waited for clear for ever. 0024 refuses a later change of the
-- time without a change of status, so the insert is the one way in, and this refuses it there.
--
-- A pending row's status time meant nothing (no status change made it), so the ones already there are cleared
-- first, with 0024's guard off for this statement alone.
ALTER TABLE transactions DISABLE TRIGGER transactions_status_time_changes_with_status;
UPDATE transactions SET status_changed_at = NULL WHERE status = 'pending' AND status_changed_at IS NOT NULL;
ALTER TABLE transactions ENABLE TRIGGER transactions_status_time_changes_with_status;

CREATE OR REPLACE FUNCTION transactions_refuse_insert_past_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM 'pending' THEN
        RAISE EXCEPTION 'transaction % cannot be inserted %: a transaction enters the ledger pending',
            NEW.transaction_id, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.published_at IS NOT NULL THEN
        RAISE EXCEPTION 'transaction % cannot be inserted published: produce publishes it, and marks it so',
            NEW.transaction_id USING ERRCODE = 'check_violation';
    END IF;
    RAISE EXCEPTION 'transaction % cannot be inserted with a status time: its first status change stamps one',
        NEW.transaction_id USING ERRCODE = 'check_violation';
END $$;
DROP TRIGGER transactions_enter_pending ON transactions;
CREATE TRIGGER transactions_enter_pending BEFORE INSERT ON transactions
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM 'pending' OR NEW.published_at IS NOT NULL
                       OR NEW.status_changed_at IS NOT NULL)
    EXECUTE FUNCTION transactions_refuse_insert_past_pending();
