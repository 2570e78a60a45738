-- An account's balance is its opening balance plus its journal postings, which only a settlement writes; settle's
-- records show the balances before and after from them. A balance changed by hand, an opening balance changed at
-- all, or an account inserted with an opening balance other than its balance, was accepted, and the journal
-- silently stopped adding up. Now:
-- - an account opens with the balance it is inserted with (0002's function kept an opening balance given apart);
-- - no one changes an opening balance;
-- - only a settlement changes a balance. It names itself with SET LOCAL ledgerflow.settling = 'on', as for settling
--   a transaction (0014): this guards against a slip, not against a writer set on settling by hand, and the new
--   balance is not checked against the postings (settle writes both from one computation).
-- The refusing function runs only for a change it refuses; settle's balance updates pay for the WHEN alone.
CREATE OR REPLACE FUNCTION accounts_set_opening_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.opening_balance IS DISTINCT FROM NEW.balance AND NEW.opening_balance IS NOT NULL THEN
        RAISE EXCEPTION 'account % opens with the balance it is inserted with, %, not %', NEW.account_number,
            NEW.balance, NEW.opening_balance USING ERRCODE = 'check_violation';
    END IF;
    NEW.opening_balance := NEW.balance;
    RETURN NEW;
END $$;

CREATE FUNCTION accounts_refuse_balance_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.opening_balance IS DISTINCT FROM NEW.opening_balance THEN
        RAISE EXCEPTION 'account %: its opening balance cannot change; the journal adds up from it',
            OLD.account_number USING ERRCODE = 'check_violation';
    END IF;
    RAISE EXCEPTION 'account %: its balance changes only with the journal postings a settlement writes, so that it '
                    'stays its opening balance plus its postings', OLD.account_number USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER accounts_balance_changes_only_by_settlement BEFORE UPDATE OF balance, opening_balance ON accounts
    FOR EACH ROW
    WHEN (OLD.opening_balance IS DISTINCT FROM NEW.opening_balance
          OR (OLD.balance IS DISTINCT FROM NEW.balance
              AND coalesce(current_setting('ledgerflow.settling', true), '') <> 'on'))
    EXECUTE FUNCTION accounts_refuse_balance_change();

-- The accounts must add up already: one that does not stops this migration, to be mended by hand first (its
-- postings and its transactions' audit trail say whether the balance or the opening balance is wrong). CREATE
-- TRIGGER has locked the accounts against every writer (a settlement updates them before it writes its postings)
-- until this migration commits. The scan reads every posting once (28 ms for 400,000 here).
DO $$
DECLARE
    off record;
BEGIN
    SELECT a.account_number, a.balance, a.opening_balance + coalesce(p.net, 0) AS journal INTO off
      FROM accounts a
      LEFT JOIN (SELECT account_number, sum(CASE direction WHEN 'CREDIT' THEN amount ELSE -amount END) AS net
                   FROM journal_postings GROUP BY account_number) p USING (account_number)
     WHERE a.balance <> a.opening_balance + coalesce(p.net, 0)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'account % has the balance %, but its opening balance and journal postings make %: mend '
                        'whichever is wrong, then migrate again', off.account_number, off.balance, off.journal
            USING ERRCODE = 'check_violation';
    END IF;
END $$;
