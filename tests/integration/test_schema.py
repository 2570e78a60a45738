"""The database enforces the domain's rules, and restates exactly the core's statuses, transitions and reasons."""

from decimal import Decimal

import psycopg
import pytest

from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.states import TERMINAL, TRANSITIONS, Status


def test_the_database_knows_exactly_the_cores_statuses_and_transitions(pg):
    statuses = dict(pg.execute("SELECT status, terminal FROM transaction_statuses").fetchall())
    transitions = set(pg.execute("SELECT from_status, to_status FROM transaction_status_transitions").fetchall())

    assert statuses == {status.value: status in TERMINAL for status in Status}
    assert transitions == {(old.value, new.value) for old, targets in TRANSITIONS.items() for new in targets}


def test_the_database_knows_exactly_the_cores_reason_codes(pg):
    codes = {row[0] for row in pg.execute("SELECT reason_code FROM reason_codes").fetchall()}
    assert codes == {code.value for code in ReasonCode}


@pytest.mark.parametrize(("amount", "from_index", "to_index", "error"), [
    ("1500.001", 0, 1, 'violates check constraint "money_amount_at_most_two_decimals"'),
    ("0.00", 0, 1, 'violates check constraint "transactions_amount_positive"'),
    ("-10.00", 0, 1, 'violates check constraint "transactions_amount_positive"'),
    ("10.00", 0, 0, 'violates check constraint "transactions_distinct_accounts"'),
])
def test_bad_transactions_are_refused_at_insert_with_a_clear_error(ledger, amount, from_index, to_index, error):
    accounts = ledger.accounts("100.00", "100.00")
    with pytest.raises(psycopg.errors.CheckViolation, match=error):
        ledger.conn.execute(
            "INSERT INTO transactions (transaction_id, amount, from_account, to_account) VALUES (%s, %s, %s, %s)",
            (f"{ledger.prefix}-bad", amount, accounts[from_index], accounts[to_index]))


def test_an_amount_is_stored_exactly_as_given(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "0.10"))
    amount = ledger.conn.execute("SELECT amount FROM transactions WHERE transaction_id = %s", (transaction_id,)).fetchone()[0]
    assert amount == Decimal("0.10") and str(amount) == "0.10"


def test_a_balance_cannot_go_below_zero(ledger):
    [account] = ledger.accounts("10.00")
    with pytest.raises(psycopg.errors.CheckViolation, match="accounts_balance_not_negative"):
        ledger.conn.execute("UPDATE accounts SET balance = balance - 10.01 WHERE account_number = %s", (account,))


def test_an_account_opens_with_the_balance_it_is_created_with(ledger):
    [account] = ledger.accounts("123.45")
    opening = ledger.conn.execute("SELECT opening_balance FROM accounts WHERE account_number = %s", (account,)).fetchone()[0]
    assert opening == Decimal("123.45")


def test_the_audit_trail_is_append_only(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "1.00"), status="cleared")
    for statement in ("UPDATE transaction_audit SET changed_by = 'me' WHERE transaction_id = %s",
                      "DELETE FROM transaction_audit WHERE transaction_id = %s"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="transaction_audit is append-only"):
            ledger.conn.execute(statement, (transaction_id,))


def test_a_direct_illegal_update_is_refused_and_leaves_no_audit_row(ledger):
    accounts = ledger.accounts("100.00", "0.00")
    [transaction_id] = ledger.transactions((accounts[0], accounts[1], "1.00"))

    with pytest.raises(psycopg.errors.CheckViolation, match="illegal status transition pending -> settled"):
        ledger.conn.execute("UPDATE transactions SET status = 'settled' WHERE transaction_id = %s", (transaction_id,))

    assert ledger.statuses([transaction_id]) == {transaction_id: "pending"}
    assert ledger.audit(transaction_id) == []
