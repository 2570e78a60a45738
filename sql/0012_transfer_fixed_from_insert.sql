-- A transaction's amount and accounts are fixed from its insert on, no longer only once it has left pending.
-- produce publishes a pending transaction and clear records its decision later, guarded by the status alone:
-- an edit in between had a decision recorded for a transfer it was not made for (a review cleared 50.00 and
-- settled 750,000.00 with no manual review). Such an edit was not audited either. A wrong transfer is
-- rejected, which is audited, and inserted again.
CREATE OR REPLACE FUNCTION transactions_refuse_new_transfer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transaction %: its amount and accounts cannot change; reject it and insert a new one',
        OLD.transaction_id USING ERRCODE = 'check_violation';
END $$;
DROP TRIGGER transactions_transfer_fixed_after_pending ON transactions;
CREATE TRIGGER transactions_transfer_fixed BEFORE UPDATE OF amount, from_account, to_account
    ON transactions FOR EACH ROW
    WHEN ((OLD.amount, OLD.from_account, OLD.to_account) IS DISTINCT FROM (NEW.amount, NEW.from_account, NEW.to_account))
    EXECUTE FUNCTION transactions_refuse_new_transfer();
