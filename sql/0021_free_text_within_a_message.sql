-- A transaction's description and status message travel in its messages (produce publishes the description, clear
-- republishes the message of a status given by hand as the outcome's reason), and were unbounded: one row whose
-- message passed the producer's limit (1,000,000 bytes) failed every produce run, or every clear batch, that took it
-- up, and the rows behind it waited for ever. 1,000 characters is several times what any bank's remittance field
-- holds, and what the pipeline writes itself is a sentence. An existing row over it stops this migration, to be
-- shortened first. The table is locked against writers first, so that no row is written past the scan.
LOCK TABLE transactions IN SHARE MODE;
DO $$
DECLARE
    long record;
BEGIN
    SELECT transaction_id, char_length(description) AS description, char_length(status_message) AS message INTO long
      FROM transactions WHERE char_length(description) > 1000 OR char_length(status_message) > 1000 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'transaction % has a description of % and a status message of % characters: shorten any '
                        'over 1,000 (UPDATE transactions SET description = left(description, 1000) ...), then migrate '
                        'again', long.transaction_id, coalesce(long.description, 0), coalesce(long.message, 0)
            USING ERRCODE = 'check_violation';
    END IF;
END $$;
ALTER TABLE transactions
    ADD CONSTRAINT transactions_description_within_a_message CHECK (char_length(description) <= 1000),
    ADD CONSTRAINT transactions_status_message_within_a_message CHECK (char_length(status_message) <= 1000);
