-- A transaction enters the ledger pending, and a pending transaction has no reason: its first status change
-- names one. Both used to be open to an insert or update by hand:
--
-- 1. A pending transaction with a reason code (say CLEARED) stopped clear for good: the decision clear
--    recorded named the same reason, which 0015 refuses as a change that does not say why, so the whole batch
--    failed on every retry. A CHECK refuses it instead, on insert and update alike.
-- 2. A transaction inserted in any other status skipped clearance (cleared), or was settled without journal
--    postings (settled), with no audit row either way. Only the state machine moves it on from pending.
--    One inserted already marked published was left out by produce's scheduled runs, which take up the
--    unpublished only: only a re-drive of its window would have published it.
--
-- A pending row's reason code meant nothing (nothing audited it), so the one this refuses is cleared first.
-- The trigger function runs only for an insert it refuses; the pipeline's inserts pay for its WHEN alone.
UPDATE transactions SET status_reason_code = NULL WHERE status = 'pending' AND status_reason_code IS NOT NULL;
ALTER TABLE transactions
    ADD CONSTRAINT transactions_pending_without_a_reason CHECK (status <> 'pending' OR status_reason_code IS NULL);

CREATE FUNCTION transactions_refuse_insert_past_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM 'pending' THEN
        RAISE EXCEPTION 'transaction % cannot be inserted %: a transaction enters the ledger pending',
            NEW.transaction_id, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RAISE EXCEPTION 'transaction % cannot be inserted published: produce publishes it, and marks it so',
        NEW.transaction_id USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER transactions_enter_pending BEFORE INSERT ON transactions
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM 'pending' OR NEW.published_at IS NOT NULL)
    EXECUTE FUNCTION transactions_refuse_insert_past_pending();
