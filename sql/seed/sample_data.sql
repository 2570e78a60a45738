-- The original system's sample data: 4 customers, 6 accounts, 3 transactions.
-- Applied by `stack.sh up` on every start; rows that exist are left as they are.
INSERT INTO customers (customer_id, name, email, risk_level) VALUES
    ('CUST001', 'John Doe',    'john@example.com',  'LOW'),
    ('CUST002', 'Jane Smith',  'jane@example.com',  'MEDIUM'),
    ('CUST003', 'Bob Johnson', 'bob@example.com',   'HIGH'),
    ('CUST004', 'Alice Brown', 'alice@example.com', 'LOW')
ON CONFLICT (customer_id) DO NOTHING;

INSERT INTO accounts (account_number, customer_id, account_type, balance) VALUES
    ('ACC001', 'CUST001', 'CHECKING',  50000.00),
    ('ACC002', 'CUST002', 'SAVINGS',   25000.00),
    ('ACC003', 'CUST003', 'CHECKING',  75000.00),
    ('ACC004', 'CUST004', 'SAVINGS',   30000.00),
    ('ACC005', 'CUST001', 'SAVINGS',  100000.00),
    ('ACC006', 'CUST002', 'CHECKING',  15000.00)
ON CONFLICT (account_number) DO NOTHING;

INSERT INTO transactions (transaction_id, amount, from_account, to_account, transaction_type, description) VALUES
    ('TXN001', 1000.00, 'ACC001', 'ACC002', 'TRANSFER', 'Monthly payment'),
    ('TXN002', 2500.50, 'ACC003', 'ACC004', 'TRANSFER', 'Investment transfer'),
    ('TXN003',  750.25, 'ACC005', 'ACC006', 'TRANSFER', 'Savings withdrawal')
ON CONFLICT (transaction_id) DO NOTHING;
