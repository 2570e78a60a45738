-- What 0006 and 0007 left open when they dropped foreign keys (found in review):
-- 1. Postings were checked at INSERT only; an UPDATE could point one at any transaction or account. The
--    journal is append-only now, as the audit trail is, and neither can be truncated: one guard serves
--    both (it replaces the audit trail's own from 0002, which let TRUNCATE through).
-- 2. With no foreign key referring to transactions, TRUNCATE transactions was allowed; it is refused once
--    any transaction has postings or an audit trail.
-- 3. A posting must match its transaction's accounts, so the transfer (amount and accounts) is fixed
--    once the transaction has left pending: clearance decided on it.
CREATE FUNCTION refuse_changes_to_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER journal_postings_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON journal_postings
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_to_append_only();
DROP TRIGGER transaction_audit_no_update_or_delete ON transaction_audit;
DROP FUNCTION transaction_audit_append_only();
CREATE TRIGGER transaction_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON transaction_audit
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_to_append_only();

CREATE FUNCTION transactions_refuse_truncate_with_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM journal_postings) OR EXISTS (SELECT FROM transaction_audit) THEN
        RAISE EXCEPTION 'transactions have journal postings or an audit trail and cannot be truncated'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER transactions_no_truncate_with_history BEFORE TRUNCATE ON transactions
    FOR EACH STATEMENT EXECUTE FUNCTION transactions_refuse_truncate_with_history();

CREATE FUNCTION transactions_refuse_new_transfer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transaction % is %: its amount and accounts cannot change any more', OLD.transaction_id, OLD.status
        USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER transactions_transfer_fixed_after_pending BEFORE UPDATE OF amount, from_account, to_account
    ON transactions FOR EACH ROW
    WHEN (OLD.status <> 'pending' AND (OLD.amount, OLD.from_account, OLD.to_account)
                                      IS DISTINCT FROM (NEW.amount, NEW.from_account, NEW.to_account))
    EXECUTE FUNCTION transactions_refuse_new_transfer();
