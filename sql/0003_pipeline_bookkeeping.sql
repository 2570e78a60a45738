-- What the pipeline records on each transaction, so every downstream effect (a republished clearance
-- outcome, a Redis record) can be rebuilt from PostgreSQL alone.
ALTER TABLE transactions
    ADD COLUMN published_at timestamptz,                 -- set once the broker acknowledged the produce
    ADD COLUMN risk_score smallint CHECK (risk_score BETWEEN 0 AND 100),
    ADD COLUMN available_balance money_amount,           -- the source balance the last decision saw
    ADD COLUMN status_changed_at timestamptz;

-- produce's query: pending, not yet published, created before the end of its interval.
CREATE INDEX transactions_unpublished ON transactions (created_at)
    WHERE status = 'pending' AND published_at IS NULL;

-- Whoever changes a status (the pipeline, psql, a repair script), the row says when.
CREATE FUNCTION transactions_stamp_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.status_changed_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER transactions_status_changed_at BEFORE UPDATE OF status ON transactions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION transactions_stamp_status_change();
