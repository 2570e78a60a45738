-- A transaction's reason code and message say why it has its status, as the audit row of that status change
-- says: they change only with the status. An update by hand of either alone was not audited, so the ledger and
-- its audit trail then disagreed on why a transaction was rejected, and settle, which rewrites a transaction's
-- Redis record from the ledger whenever its outcome is delivered again, carried the unaudited reason there too.
-- A wrong reason is mended as a wrong status is: by a status change, which is audited (a terminal status has
-- none to make). The function runs only for an update it refuses; the pipeline's status changes pay for the
-- WHEN alone.
CREATE FUNCTION transactions_refuse_reason_without_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transaction % is %: its reason code and message change only with its status, as '
                    'transaction_audit records them', OLD.transaction_id, OLD.status USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER transactions_reason_changes_with_status BEFORE UPDATE OF status_reason_code, status_message
    ON transactions FOR EACH ROW
    WHEN (OLD.status = NEW.status AND (OLD.status_reason_code, OLD.status_message)
                                      IS DISTINCT FROM (NEW.status_reason_code, NEW.status_message))
    EXECUTE FUNCTION transactions_refuse_reason_without_status_change();
