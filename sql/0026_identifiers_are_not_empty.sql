-- A message's identifiers have at least one character (its contract, core/messages.py), but the tables took an
-- empty one: a transaction with an empty id (or between accounts, or of a customer, with one) was published,
-- dead-lettered by clear on every delivery and every re-drive, and waited for clear for ever. Now its insert is
-- refused, naming the constraint. NOT VALID: the rows already there are not checked, so this takes no scan under
-- the table's lock; none of them can take part in a new transfer, and an empty-id transaction already there is
-- what `make waiting` shows waiting for clear, to be rejected by hand (status_reason_code = 'REVIEW_DECLINED').
ALTER TABLE customers ADD CONSTRAINT customers_customer_id_not_empty CHECK (customer_id <> '') NOT VALID;
ALTER TABLE accounts ADD CONSTRAINT accounts_account_number_not_empty CHECK (account_number <> '') NOT VALID;
ALTER TABLE transactions ADD CONSTRAINT transactions_transaction_id_not_empty CHECK (transaction_id <> '') NOT VALID;
