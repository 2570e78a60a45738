-- A message's identifiers have at least one character (its contract, core/messages.py), but the tables took an
-- empty one: a transaction with an empty id, or between accounts with one, or of a customer with one, was
-- published, dead-lettered by clear on every delivery and every re-drive, and waited for clear for ever. Now such
-- an insert is refused, naming the constraint.
--
-- NOT VALID: the rows already there are not checked in full under the tables' locks. A CHECK still applies to
-- any later update of a row, so a transaction that an empty identifier stopped is first rejected here, as by
-- hand, while it still can be. The tables are locked against writers first (in the pipeline's order:
-- transactions, then accounts), so that no such row is written past that scan of the transactions not yet
-- terminal. An account held by an empty-id customer stops the migration, to be given a customer first: its
-- transfers would be refused from then on. An account or customer with an empty id keeps its row, which can no
-- longer be changed, and takes part in no new transfer.
LOCK TABLE transactions IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE accounts IN SHARE ROW EXCLUSIVE MODE;
DO $$
DECLARE
    account_number_held_by_nobody text;
BEGIN
    SELECT account_number INTO account_number_held_by_nobody FROM accounts WHERE customer_id = '' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % is held by a customer with an empty id: give it a customer '
                        '(UPDATE accounts SET customer_id = ... WHERE customer_id = ''''), then migrate again',
                        account_number_held_by_nobody USING ERRCODE = 'check_violation';
    END IF;
END $$;
UPDATE transactions
   SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED',
       status_message = 'an empty transaction or account id, which no message can carry'
 WHERE status IN ('pending', 'cleared', 'cleared_with_conditions', 'requires_manual_review')
   AND (transaction_id = '' OR from_account = '' OR to_account = '');
ALTER TABLE transactions
    ADD CONSTRAINT transactions_transaction_id_not_empty CHECK (transaction_id <> '') NOT VALID,
    ADD CONSTRAINT transactions_accounts_not_empty CHECK (from_account <> '' AND to_account <> '') NOT VALID;
ALTER TABLE accounts
    ADD CONSTRAINT accounts_account_number_not_empty CHECK (account_number <> '') NOT VALID,
    ADD CONSTRAINT accounts_customer_id_not_empty CHECK (customer_id <> '') NOT VALID;
ALTER TABLE customers ADD CONSTRAINT customers_customer_id_not_empty CHECK (customer_id <> '') NOT VALID;
