-- Two status changes made by hand (psql, a repair script) used to stop a stage for good. Clear republishes
-- the outcome the ledger records for a transaction that is no longer pending, and settle rewrites the Redis
-- record of every transaction of its batch; both ran into a row the pipeline never writes and failed the
-- whole batch, which was then redelivered and failed again on every retry:
--
-- 1. A status change without a reason code (say `SET status = 'rejected'` alone): a published outcome needs
--    one. Every status change now says why, as the pipeline's always did; a writer names the reason
--    (REVIEW_DECLINED for a transfer rejected by hand), which the audit row records.
-- 2. settled without journal postings (`cleared -> settled` is a legal transition): a settlement record
--    shows the balances before and after, which only the postings hold. Only a settlement, which writes the
--    postings with the status change, may now settle; it names itself with SET LOCAL ledgerflow.settling =
--    'on'. The setting guards against a slip, not against a writer set on settling by hand.
--
-- Both are conditions of the query that already looks for an illegal transition, so they cost no statement of
-- their own, and an illegal transition is still the error reported first. The function is 0002's with those
-- conditions; 0004's setting is restated, as CREATE OR REPLACE resets it.
CREATE OR REPLACE FUNCTION transactions_audit_status_change() RETURNS trigger LANGUAGE plpgsql
    SET enable_nestloop = off AS $$
DECLARE
    settling constant boolean := coalesce(current_setting('ledgerflow.settling', true), '') = 'on';
    wrong record;
BEGIN
    SELECT n.transaction_id, o.status AS old_status, n.status AS new_status,
           EXISTS (SELECT FROM transaction_status_transitions s
                    WHERE s.from_status = o.status AND s.to_status = n.status) AS legal INTO wrong
      FROM old_rows o JOIN new_rows n USING (id)
     WHERE o.status <> n.status
       AND (NOT EXISTS (SELECT FROM transaction_status_transitions s
                         WHERE s.from_status = o.status AND s.to_status = n.status)
            OR (n.status = 'settled' AND NOT settling)
            OR n.status_reason_code IS NULL)
     LIMIT 1;
    IF NOT FOUND THEN
        NULL;
    ELSIF NOT wrong.legal THEN
        RAISE EXCEPTION 'illegal status transition % -> % for transaction %',
            wrong.old_status, wrong.new_status, wrong.transaction_id
            USING ERRCODE = 'check_violation';
    ELSIF wrong.new_status = 'settled' AND NOT settling THEN
        RAISE EXCEPTION 'transaction % can be settled only by a settlement, which writes its journal postings',
            wrong.transaction_id
            USING ERRCODE = 'check_violation';
    ELSE
        RAISE EXCEPTION 'status change % -> % of transaction % does not say why: set status_reason_code',
            wrong.old_status, wrong.new_status, wrong.transaction_id
            USING ERRCODE = 'check_violation';
    END IF;

    INSERT INTO transaction_audit (transaction_id, old_status, new_status, changed_by, reason_code, message,
                                   dag_id, run_id, task_id, try_number, map_index)
    SELECT n.transaction_id, o.status, n.status,
           coalesce(nullif(current_setting('ledgerflow.changed_by', true), ''), session_user),
           n.status_reason_code, n.status_message,
           nullif(current_setting('ledgerflow.dag_id', true), ''),
           nullif(current_setting('ledgerflow.run_id', true), ''),
           nullif(current_setting('ledgerflow.task_id', true), ''),
           nullif(current_setting('ledgerflow.try_number', true), '')::integer,
           nullif(current_setting('ledgerflow.map_index', true), '')::integer
      FROM old_rows o JOIN new_rows n USING (id)
     WHERE o.status <> n.status;
    RETURN NULL;
END $$;
