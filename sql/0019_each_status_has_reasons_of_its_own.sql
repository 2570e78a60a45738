-- Each status is entered with reasons of its own (the core's REASONS), and a transaction that has left pending
-- always has one. A row given another status's reason by hand used to stop a stage for good, as a pending row
-- with a reason did before 0018: a cleared transaction given the reason SETTLED had its settlement refused as
-- a status change that does not say why (0015), and its batch failed on every retry; one without a reason had
-- clear fail to republish its outcome, which needs one.
--
-- No reason belongs to two statuses (the primary key), so a status change that names a reason of its new
-- status names one other than the one it replaces, which 0015 requires.
CREATE TABLE transaction_status_reasons (
    reason_code varchar(50) PRIMARY KEY REFERENCES reason_codes (reason_code),
    status      varchar(30) NOT NULL REFERENCES transaction_statuses (status)
);
INSERT INTO transaction_status_reasons (status, reason_code) VALUES
    ('cleared', 'CLEARED'),
    ('cleared', 'REVIEW_APPROVED'),
    ('cleared_with_conditions', 'CLEARED_WITH_CONDITIONS'),
    ('requires_manual_review', 'MANUAL_REVIEW_RISK_SCORE'),
    ('requires_manual_review', 'MANUAL_REVIEW_AMOUNT'),
    ('settled', 'SETTLED'),
    ('rejected', 'AMOUNT_NOT_POSITIVE'),
    ('rejected', 'AMOUNT_MORE_THAN_TWO_DECIMALS'),
    ('rejected', 'SAME_ACCOUNT'),
    ('rejected', 'SOURCE_ACCOUNT_NOT_FOUND'),
    ('rejected', 'DESTINATION_ACCOUNT_NOT_FOUND'),
    ('rejected', 'SOURCE_ACCOUNT_NOT_ACTIVE'),
    ('rejected', 'DESTINATION_ACCOUNT_NOT_ACTIVE'),
    ('rejected', 'INSUFFICIENT_FUNDS'),
    ('rejected', 'INSUFFICIENT_FUNDS_AT_SETTLEMENT'),
    ('rejected', 'DESTINATION_BALANCE_LIMIT_AT_SETTLEMENT'),
    ('rejected', 'SOURCE_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT'),
    ('rejected', 'DESTINATION_ACCOUNT_NOT_ACTIVE_AT_SETTLEMENT'),
    ('rejected', 'REVIEW_DECLINED');
CREATE TRIGGER transaction_status_reasons_read_only
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON transaction_status_reasons
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_to_reference_data();

-- 0007's check of every updated row, which looked the reason up alone, now looks up the pair, and refuses a row
-- past pending without a reason. It runs after the status trigger (the order of their names), so a status
-- change is still refused first for what is wrong with the change. Its check of every inserted row has nothing
-- left to find since 0018 (a row is inserted pending, without a reason), so it goes.
CREATE OR REPLACE FUNCTION transactions_check_status_and_reason_known() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    wrong record;
BEGIN
    SELECT n.transaction_id, n.status, n.status_reason_code INTO wrong
      FROM new_rows n
     WHERE NOT EXISTS (SELECT FROM transaction_statuses s WHERE s.status = n.status)
        OR (n.status_reason_code IS NULL AND n.status <> 'pending')
        OR (n.status_reason_code IS NOT NULL
            AND NOT EXISTS (SELECT FROM transaction_status_reasons r
                             WHERE r.reason_code = n.status_reason_code AND r.status = n.status))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'transaction % cannot be % with reason code %: each status has reasons of its own '
                        '(transaction_status_reasons), and only pending has none',
            wrong.transaction_id, wrong.status, coalesce(wrong.status_reason_code, 'NULL')
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
DROP TRIGGER transactions_status_and_reason_known_on_insert ON transactions;

-- The rows written before are held to the same rule, so that the pipeline, which may write any row it reads (clear
-- fills in the risk score of a transaction rejected by hand), never runs into one that breaks it. Only a change by
-- hand could leave such a row; it stops this migration, to be given one of its status's reasons first. The rule is
-- the function's above, as of this migration. DROP TRIGGER has locked the table against every writer until this
-- migration commits, so no row can be written past the scan (which takes about a second per 3 million rows).
DO $$
DECLARE
    wrong record;
BEGIN
    SELECT t.transaction_id, t.status, t.status_reason_code INTO wrong
      FROM transactions t
     WHERE (t.status_reason_code IS NULL AND t.status <> 'pending')
        OR (t.status_reason_code IS NOT NULL
            AND NOT EXISTS (SELECT FROM transaction_status_reasons r
                             WHERE r.reason_code = t.status_reason_code AND r.status = t.status))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'transaction % is % with reason code %, not one of that status''s: give it and any other '
                        'such row one (transaction_status_reasons; REVIEW_DECLINED for one rejected by hand), '
                        'then migrate again',
            wrong.transaction_id, wrong.status, coalesce(wrong.status_reason_code, 'NULL')
            USING ERRCODE = 'foreign_key_violation';
    END IF;
END $$;
