-- The postings check (0007) joined a batch's postings with their transactions twice: once to KEY SHARE-lock
-- the transactions, once to look for a posting that matches none. One join now locks the transactions of
-- the postings that match and counts them; only when the count falls short does the second query run, to
-- name the culprit. 45 ms of the 20,000 postings of a 10,000-transfer settlement became 35 ms.
CREATE OR REPLACE FUNCTION journal_postings_check_transaction_and_account() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    matching bigint;
    wrong record;
BEGIN
    SELECT count(*) INTO matching FROM (
        SELECT FROM new_rows p JOIN transactions t ON t.transaction_id = p.transaction_id
         WHERE p.account_number = CASE p.direction WHEN 'DEBIT' THEN t.from_account WHEN 'CREDIT' THEN t.to_account END
           FOR KEY SHARE OF t) locked;
    IF matching = (SELECT count(*) FROM new_rows) THEN
        RETURN NULL;
    END IF;
    SELECT p.transaction_id, p.direction, p.account_number INTO wrong
      FROM new_rows p LEFT JOIN transactions t ON t.transaction_id = p.transaction_id
     WHERE t.transaction_id IS NULL
        OR p.account_number IS DISTINCT FROM
           CASE p.direction WHEN 'DEBIT' THEN t.from_account WHEN 'CREDIT' THEN t.to_account END
     LIMIT 1;
    RAISE EXCEPTION 'posting % of transaction % to account % matches no such transaction and account',
        wrong.direction, wrong.transaction_id, wrong.account_number
        USING ERRCODE = 'foreign_key_violation';
END $$;
