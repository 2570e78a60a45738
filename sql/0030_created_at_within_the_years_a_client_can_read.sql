-- A transaction's created_at must be a time the pipeline's client can read. psycopg, as Python's datetime, reads
-- years 1 to 9999 only, and nothing refused '-infinity' (PostgreSQL's 'unknown', say), 'infinity' or a date BC:
-- such a pending row sorts first among the unpublished (-infinity) or within every window's end, and its batch
-- failed to load on every produce run and retry, so that every transaction after it waited for produce for ever.
-- Now such an insert is refused, naming the constraint. (The bounds keep a day from each end of the range, for
-- the reader's time zone.)
--
-- NOT VALID, as in 0026: the rows already there are found by the created_at indexes, not a scan under the lock.
-- One found stops the migration, to be given its time first: a CHECK applies to any later update of the row, so
-- not even a rejection could change it after this.
LOCK TABLE transactions IN SHARE ROW EXCLUSIVE MODE;
DO $$
DECLARE
    unreadable record;
BEGIN
    SELECT transaction_id, created_at INTO unreadable FROM transactions
     WHERE created_at <= '0001-01-02 00:00:00+00' OR created_at >= '9999-12-31 00:00:00+00' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'transaction % was created at %, which the pipeline cannot read: give it the time it was '
                        'created (UPDATE transactions SET created_at = ... WHERE transaction_id = ...), then migrate '
                        'again', unreadable.transaction_id, unreadable.created_at USING ERRCODE = 'check_violation';
    END IF;
END $$;
ALTER TABLE transactions
    ADD CONSTRAINT transactions_created_at_readable
    CHECK (created_at > '0001-01-02 00:00:00+00' AND created_at < '9999-12-31 00:00:00+00') NOT VALID;
