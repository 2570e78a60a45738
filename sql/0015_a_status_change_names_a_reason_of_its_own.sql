-- 0014 asked a status change for a reason code, but a change out of cleared, cleared_with_conditions or
-- requires_manual_review kept the one it had: `SET status = 'rejected'` alone on a cleared transaction was
-- audited and republished as rejected for the reason CLEARED. A status change now sets a reason code of its
-- own, other than the one it replaces, as each of the pipeline's changes does (pending has none; settlement
-- replaces CLEARED or CLEARED_WITH_CONDITIONS with SETTLED or the refusal's code; a review replaces its
-- MANUAL_REVIEW_* code).
--
-- Of a statement's wrong rows, an illegal transition is now reported first whichever row it is in (ORDER BY
-- legal: only the rows the check picked out are sorted, none in the pipeline's statements).
--
-- The function is 0014's with those two changes.
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
            OR n.status_reason_code IS NOT DISTINCT FROM o.status_reason_code)
     ORDER BY legal
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
        RAISE EXCEPTION 'status change % -> % of transaction % does not say why: set status_reason_code to its reason',
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
