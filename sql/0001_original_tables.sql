-- The four tables of the original system: customers, accounts, transactions and their audit trail.
-- Money is NUMERIC(15,2) as it was; later migrations tighten the rules.
CREATE TABLE customers (
    id          bigserial PRIMARY KEY,
    customer_id varchar(50) UNIQUE NOT NULL,
    name        varchar(100) NOT NULL,
    email       varchar(100),
    risk_level  varchar(20) NOT NULL DEFAULT 'LOW',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id             bigserial PRIMARY KEY,
    account_number varchar(50) UNIQUE NOT NULL,
    customer_id    varchar(50) NOT NULL REFERENCES customers (customer_id),
    account_type   varchar(20) NOT NULL,
    balance        numeric(15, 2) NOT NULL DEFAULT 0.00,
    status         varchar(20) NOT NULL DEFAULT 'ACTIVE',
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE transactions (
    id               bigserial PRIMARY KEY,
    transaction_id   varchar(50) UNIQUE NOT NULL,
    amount           numeric(15, 2) NOT NULL,
    from_account     varchar(50) REFERENCES accounts (account_number),
    to_account       varchar(50) REFERENCES accounts (account_number),
    transaction_type varchar(20) NOT NULL DEFAULT 'TRANSFER',
    description      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    status           varchar(30) NOT NULL DEFAULT 'pending'
);

CREATE TABLE transaction_audit (
    id             bigserial PRIMARY KEY,
    transaction_id varchar(50) NOT NULL REFERENCES transactions (transaction_id),
    old_status     varchar(30),
    new_status     varchar(30) NOT NULL,
    changed_by     varchar(100) NOT NULL,
    changed_at     timestamptz NOT NULL DEFAULT now()
);
