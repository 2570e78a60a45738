-- Clear and settle change a batch's statuses with one UPDATE each; what that UPDATE costs per row is
-- what bounds their throughput. Two things made it dear:
--
-- 1. status was indexed (transactions_status_created_at, and the predicate of transactions_unpublished),
--    so no status change could be a HOT update: each one wrote a new entry into every index of the
--    table. With status in no index, and room left on each page for the next version of its rows, a
--    status change rewrites the row in place and touches no index. The status index served no query
--    of the pipeline (produce finds its work through transactions_unpublished, a re-drive through
--    created_at); an operator looking for what waits in a status now scans the table.
--    produce's mark (published_at) still moves rows out of transactions_unpublished, so it is not HOT.
-- 2. transaction_audit re-checked with four foreign keys (transaction, old and new status, reason)
--    values that the audit trigger copies from rows of transactions whose own constraints and the
--    transition check had just passed. The audit trail is now written only by that trigger (a guard
--    refuses any other INSERT), which makes those foreign keys redundant.
DROP INDEX transactions_status_created_at;
DROP INDEX transactions_unpublished;
CREATE INDEX transactions_unpublished ON transactions (created_at) WHERE published_at IS NULL;
-- Each row is written four times (insert, published, decided, settled); a quarter of every new page stays
-- free so the later versions fit beside the first.
ALTER TABLE transactions SET (fillfactor = 75);

ALTER TABLE transaction_audit
    DROP CONSTRAINT transaction_audit_transaction_id_fkey,
    DROP CONSTRAINT transaction_audit_old_status_known,
    DROP CONSTRAINT transaction_audit_new_status_known,
    DROP CONSTRAINT transaction_audit_reason_code_fkey;

CREATE FUNCTION transaction_audit_only_from_the_status_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Depth 1 is this guard fired by a statement of its own; the status trigger's INSERT fires it at 2.
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'transaction_audit is written by the status-change trigger of transactions only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER transaction_audit_insert_only_by_trigger BEFORE INSERT ON transaction_audit
    FOR EACH STATEMENT EXECUTE FUNCTION transaction_audit_only_from_the_status_trigger();
