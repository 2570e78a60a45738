-- Exact money, the transaction state machine, a richer audit trail and a double-entry journal.
--
-- The statuses, their legal transitions and the reason codes are defined in the domain core
-- (plugins/ledgerflow/core); the tables below restate them for the database to enforce, and
-- tests/integration/test_schema.py checks that the two agree.

-- Money: exact decimals with at most two places. NUMERIC(15,2) would round 1.005 silently; an
-- unconstrained NUMERIC with a scale check refuses it instead.
CREATE DOMAIN money_amount AS numeric
    CONSTRAINT money_amount_at_most_two_decimals CHECK (scale(VALUE) <= 2)
    CONSTRAINT money_amount_fits_numeric_15_2 CHECK (abs(VALUE) < 10000000000000);

CREATE TABLE transaction_statuses (
    status   varchar(30) PRIMARY KEY,
    terminal boolean NOT NULL
);
INSERT INTO transaction_statuses (status, terminal) VALUES
    ('pending', false),
    ('cleared', false),
    ('cleared_with_conditions', false),
    ('requires_manual_review', false),
    ('settled', true),
    ('rejected', true);

CREATE TABLE transaction_status_transitions (
    from_status varchar(30) NOT NULL REFERENCES transaction_statuses (status),
    to_status   varchar(30) NOT NULL REFERENCES transaction_statuses (status),
    PRIMARY KEY (from_status, to_status)
);
INSERT INTO transaction_status_transitions (from_status, to_status) VALUES
    ('pending', 'cleared'),
    ('pending', 'cleared_with_conditions'),
    ('pending', 'requires_manual_review'),
    ('pending', 'rejected'),
    ('cleared', 'settled'),
    ('cleared', 'rejected'),
    ('cleared_with_conditions', 'settled'),
    ('cleared_with_conditions', 'rejected'),
    ('requires_manual_review', 'cleared'),
    ('requires_manual_review', 'rejected');

CREATE TABLE reason_codes (
    reason_code varchar(50) PRIMARY KEY
);
INSERT INTO reason_codes (reason_code) VALUES
    ('CLEARED'),
    ('CLEARED_WITH_CONDITIONS'),
    ('MANUAL_REVIEW_RISK_SCORE'),
    ('MANUAL_REVIEW_AMOUNT'),
    ('AMOUNT_NOT_POSITIVE'),
    ('AMOUNT_MORE_THAN_TWO_DECIMALS'),
    ('SAME_ACCOUNT'),
    ('SOURCE_ACCOUNT_NOT_FOUND'),
    ('DESTINATION_ACCOUNT_NOT_FOUND'),
    ('SOURCE_ACCOUNT_NOT_ACTIVE'),
    ('DESTINATION_ACCOUNT_NOT_ACTIVE'),
    ('INSUFFICIENT_FUNDS'),
    ('INSUFFICIENT_FUNDS_AT_SETTLEMENT'),
    ('SETTLED'),
    ('REVIEW_APPROVED'),
    ('REVIEW_DECLINED');

-- customers and accounts
ALTER TABLE customers
    ADD CONSTRAINT customers_risk_level_known CHECK (risk_level IN ('LOW', 'MEDIUM', 'HIGH'));

ALTER TABLE accounts
    ALTER COLUMN balance TYPE money_amount,
    ADD COLUMN opening_balance money_amount,
    ADD CONSTRAINT accounts_balance_not_negative CHECK (balance >= 0),
    ADD CONSTRAINT accounts_status_known CHECK (status IN ('ACTIVE', 'INACTIVE', 'FROZEN', 'CLOSED'));
UPDATE accounts SET opening_balance = balance;  -- no postings exist yet
ALTER TABLE accounts
    ALTER COLUMN opening_balance SET NOT NULL,
    ADD CONSTRAINT accounts_opening_balance_not_negative CHECK (opening_balance >= 0);

-- An account opens with the balance it is created with; reconciliation starts from there.
CREATE FUNCTION accounts_set_opening_balance() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.opening_balance := coalesce(NEW.opening_balance, NEW.balance);
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_opening_balance BEFORE INSERT ON accounts
    FOR EACH ROW EXECUTE FUNCTION accounts_set_opening_balance();

-- transactions
ALTER TABLE transactions
    ALTER COLUMN amount TYPE money_amount,
    ALTER COLUMN from_account SET NOT NULL,
    ALTER COLUMN to_account SET NOT NULL,
    ADD COLUMN status_reason_code varchar(50) REFERENCES reason_codes (reason_code),
    ADD COLUMN status_message text,
    ADD CONSTRAINT transactions_amount_positive CHECK (amount > 0),
    ADD CONSTRAINT transactions_distinct_accounts CHECK (from_account <> to_account),
    ADD CONSTRAINT transactions_status_known FOREIGN KEY (status) REFERENCES transaction_statuses (status);
CREATE INDEX transactions_status_created_at ON transactions (status, created_at);
CREATE INDEX transactions_created_at ON transactions (created_at);

-- audit trail: why, and which Airflow task instance made the change (NULL outside Airflow)
ALTER TABLE transaction_audit
    ADD COLUMN reason_code varchar(50) REFERENCES reason_codes (reason_code),
    ADD COLUMN message text,
    ADD COLUMN dag_id varchar(250),
    ADD COLUMN run_id varchar(250),
    ADD COLUMN task_id varchar(250),
    ADD COLUMN try_number integer,
    ADD COLUMN map_index integer,
    ADD CONSTRAINT transaction_audit_old_status_known FOREIGN KEY (old_status) REFERENCES transaction_statuses (status),
    ADD CONSTRAINT transaction_audit_new_status_known FOREIGN KEY (new_status) REFERENCES transaction_statuses (status);
CREATE INDEX transaction_audit_transaction_id ON transaction_audit (transaction_id);
CREATE INDEX transaction_audit_run_id ON transaction_audit (dag_id, run_id);

-- Every status change, whoever makes it (the pipeline, psql, a repair script), is checked against
-- the legal transitions and audited exactly once, in the same database transaction. Statement-level
-- with transition tables, so a batch update costs one set-based check and one INSERT ... SELECT.
-- Writers name themselves with SET LOCAL ledgerflow.changed_by / dag_id / run_id / task_id /
-- try_number / map_index; the row's status_reason_code and status_message give the reason.
CREATE FUNCTION transactions_audit_status_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    illegal record;
BEGIN
    SELECT n.transaction_id, o.status AS old_status, n.status AS new_status INTO illegal
      FROM old_rows o JOIN new_rows n USING (id)
     WHERE o.status <> n.status
       AND NOT EXISTS (SELECT FROM transaction_status_transitions s
                        WHERE s.from_status = o.status AND s.to_status = n.status)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'illegal status transition % -> % for transaction %',
            illegal.old_status, illegal.new_status, illegal.transaction_id
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
CREATE TRIGGER transactions_audit_status AFTER UPDATE ON transactions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION transactions_audit_status_change();

-- The audit trail is append-only.
CREATE FUNCTION transaction_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'transaction_audit is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER transaction_audit_no_update_or_delete BEFORE UPDATE OR DELETE ON transaction_audit
    FOR EACH STATEMENT EXECUTE FUNCTION transaction_audit_append_only();

-- Double-entry journal: settling a transfer writes one DEBIT of the source and one CREDIT of the
-- destination, each with the balance after it. For every account,
--   balance = opening_balance - sum(DEBIT amounts) + sum(CREDIT amounts),
-- and the unique key makes a second settlement of the same transaction impossible.
CREATE TABLE journal_postings (
    id             bigserial PRIMARY KEY,
    transaction_id varchar(50) NOT NULL REFERENCES transactions (transaction_id),
    account_number varchar(50) NOT NULL REFERENCES accounts (account_number),
    direction      varchar(6) NOT NULL CHECK (direction IN ('DEBIT', 'CREDIT')),
    amount         money_amount NOT NULL CHECK (amount > 0),
    balance_after  money_amount NOT NULL CHECK (balance_after >= 0),
    posted_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transaction_id, direction)
);
CREATE INDEX journal_postings_account_number ON journal_postings (account_number);
