-- A message's identifiers have at least one character (its contract, core/messages.py), but the tables took an
-- empty one: a transaction with an empty id, or between accounts with one, or of a customer with one, was
-- published, dead-lettered by clear on every delivery and every re-drive, and waited for clear for ever. Now such
-- an insert is refused, naming the constraint.
--
-- NOT VALID: the rows already there are not scanned under the tables' locks. A CHECK still applies to any later
-- update of a row, so a transaction that an empty identifier stopped is first rejected here, as by hand, while it
-- still can be: the one scan of the transactions not yet terminal, without a table lock. An account or customer
-- with an empty identifier keeps its row, which can no longer be changed, and takes part in no new transfer.
UPDATE transactions t
   SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED',
       status_message = 'an empty transaction, account or customer id, which no message can carry'
 WHERE t.status IN ('pending', 'cleared', 'cleared_with_conditions', 'requires_manual_review')
   AND (t.transaction_id = '' OR t.from_account = '' OR t.to_account = ''
        OR EXISTS (SELECT FROM accounts a
                    WHERE a.account_number IN (t.from_account, t.to_account) AND a.customer_id = ''));
-- In the pipeline's order of locks (transactions, then accounts), so that a try does not deadlock with settle.
ALTER TABLE transactions ADD CONSTRAINT transactions_transaction_id_not_empty CHECK (transaction_id <> '') NOT VALID;
ALTER TABLE accounts
    ADD CONSTRAINT accounts_account_number_not_empty CHECK (account_number <> '') NOT VALID,
    ADD CONSTRAINT accounts_customer_id_not_empty CHECK (customer_id <> '') NOT VALID;
ALTER TABLE customers ADD CONSTRAINT customers_customer_id_not_empty CHECK (customer_id <> '') NOT VALID;
