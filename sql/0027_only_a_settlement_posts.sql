-- Only a settlement writes journal postings. 0008 closed the journal to UPDATE, DELETE and TRUNCATE, but INSERT
-- stayed open to any posting whose transaction and account match (0009). A posting inserted by hand for a
-- transaction still pending or cleared made that transaction's settlement fail on the journal's unique key, again
-- at every redelivery, and so held settle's one consumer; one for a rejected transaction, or of another amount,
-- silently broke "a balance is its opening balance plus its postings", as no balance moved with it.
-- A posting now needs the setting a settlement names itself with (ledgerflow.settling, 0014: a guard against a
-- slip, not against a writer set on posting by hand), a transaction settled in the same database transaction
-- (settle marks its transactions settled, which stamps them with the transaction's time, 0013, before it writes
-- their postings; so a transaction the original system settled, without postings, takes none later) and the
-- transaction's amount. The same one join locks and counts the postings that pass; only when the count falls
-- short do the second query and the error say which posting failed, and why. Postings written before this
-- migration are not looked at again (0023 checked every balance against its postings).
CREATE OR REPLACE FUNCTION journal_postings_check_transaction_and_account() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    matching bigint;
    wrong record;
BEGIN
    SELECT count(*) INTO matching FROM (
        SELECT FROM new_rows p JOIN transactions t ON t.transaction_id = p.transaction_id
         WHERE p.account_number = CASE p.direction WHEN 'DEBIT' THEN t.from_account WHEN 'CREDIT' THEN t.to_account END
           AND t.status = 'settled' AND t.status_changed_at = now() AND p.amount = t.amount
           FOR KEY SHARE OF t) locked;
    IF matching = (SELECT count(*) FROM new_rows) THEN
        IF coalesce(current_setting('ledgerflow.settling', true), '') = 'on' THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'journal postings are written by a settlement, and by nothing else'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'a settlement names itself with SET LOCAL ledgerflow.settling = ''on''';
    END IF;
    SELECT * INTO wrong FROM (
        SELECT p.transaction_id, p.direction, p.account_number, p.amount, t.status, t.amount AS transaction_amount,
               CASE WHEN t.transaction_id IS NULL OR p.account_number IS DISTINCT FROM
                         CASE p.direction WHEN 'DEBIT' THEN t.from_account WHEN 'CREDIT' THEN t.to_account END
                    THEN 'no such transaction and account'
                    WHEN t.status <> 'settled' THEN 'not settled'
                    WHEN t.status_changed_at IS DISTINCT FROM now() THEN 'settled before'
                    WHEN p.amount <> t.amount THEN 'another amount' END AS problem
          FROM new_rows p LEFT JOIN transactions t ON t.transaction_id = p.transaction_id) checked
     WHERE problem IS NOT NULL
     LIMIT 1;
    IF NOT FOUND THEN  -- this query's snapshot is newer than the first's: a transaction changed in between
        RAISE EXCEPTION 'a posting''s transaction changed while the posting was checked; try again'
            USING ERRCODE = 'serialization_failure';
    END IF;
    IF wrong.problem = 'no such transaction and account' THEN
        RAISE EXCEPTION 'posting % of transaction % to account % matches no such transaction and account',
            wrong.direction, wrong.transaction_id, wrong.account_number
            USING ERRCODE = 'foreign_key_violation';
    ELSIF wrong.problem = 'not settled' THEN
        RAISE EXCEPTION 'posting % of transaction %: the transaction is %, and only its settlement posts it',
            wrong.direction, wrong.transaction_id, wrong.status
            USING ERRCODE = 'check_violation';
    ELSIF wrong.problem = 'settled before' THEN
        RAISE EXCEPTION 'posting % of transaction %: it was settled before, and only its settlement posts it',
            wrong.direction, wrong.transaction_id
            USING ERRCODE = 'check_violation';
    END IF;
    RAISE EXCEPTION 'posting % of transaction % is of %, the transaction of %',
        wrong.direction, wrong.transaction_id, wrong.amount, wrong.transaction_amount
        USING ERRCODE = 'check_violation';
END $$;
