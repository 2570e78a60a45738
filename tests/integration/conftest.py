"""Fixtures on the real PostgreSQL of the local stack.

Tests create their own customers, accounts and transactions under a unique prefix (one test inserts a
transfer between sample accounts, and deletes it), so they can run against the database `make run` uses. The
session pauses the pipeline first (tests/conftest.py), as a running pipeline would take their pending transfers.
"""

import time
import uuid
from decimal import Decimal

import pytest

from tests.conftest import open_pg


# the reason a repair script would give for moving a transaction to each status
BY_HAND_REASONS = {"cleared": "CLEARED", "cleared_with_conditions": "CLEARED_WITH_CONDITIONS",
                   "requires_manual_review": "MANUAL_REVIEW_RISK_SCORE", "rejected": "REVIEW_DECLINED"}


@pytest.fixture(scope="session", autouse=True)
def _pipeline_paused(pipeline_paused):
    pass


class LedgerFixture:
    def __init__(self, conn):
        self.conn = conn
        self.prefix = f"T{uuid.uuid4().hex[:10]}"
        self.opened = 0  # accounts opened so far, which numbers the next
        self.customer = self.add_customer("Test Customer", "LOW", suffix="C")

    def add_customer(self, name: str, risk_level: str, suffix: str | None = None) -> str:
        customer_id = f"{self.prefix}-{suffix or uuid.uuid4().hex[:8]}"
        self.conn.execute("INSERT INTO customers (customer_id, name, risk_level) VALUES (%s, %s, %s)",
                          (customer_id, name, risk_level))
        return customer_id

    def accounts(self, *balances: str, customer: str | None = None) -> list[str]:
        """Open accounts with these balances, held by `customer` (by default the fixture's own)."""
        numbers = [f"{self.prefix}-A{self.opened + i}" for i in range(len(balances))]
        self.opened += len(numbers)
        with self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO accounts (account_number, customer_id, account_type, balance) VALUES (%s, %s, 'CHECKING', %s)",
                [(number, customer or self.customer, Decimal(balance)) for number, balance in zip(numbers, balances)])
        return numbers

    def transactions(self, *transfers: tuple[str, str, str], status: str = "pending") -> list[str]:
        """Insert (from, to, amount) transfers; with a status other than pending, move them there by a
        direct, audited update as a repair script would."""
        ids = [f"{self.prefix}-X{uuid.uuid4().hex[:8]}" for _ in transfers]
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO transactions (transaction_id, amount, from_account, to_account) VALUES (%s, %s, %s, %s)",
                [(i, Decimal(amount), a, b) for i, (a, b, amount) in zip(ids, transfers)])
            if status != "pending":
                self.move_by_hand(ids, status)
        return ids

    def move_by_hand(self, ids, status: str) -> None:
        """Move transactions to `status` by a direct, audited update, as a repair script would."""
        self.conn.execute("UPDATE transactions SET status = %s, status_reason_code = %s WHERE transaction_id = ANY(%s)",
                          (status, BY_HAND_REASONS[status], list(ids)))

    def balances(self, numbers) -> dict[str, Decimal]:
        return dict(self.conn.execute("SELECT account_number, balance FROM accounts WHERE account_number = ANY(%s)",
                                      (list(numbers),)).fetchall())

    def statuses(self, ids) -> dict[str, str]:
        return dict(self.conn.execute("SELECT transaction_id, status FROM transactions WHERE transaction_id = ANY(%s)",
                                      (list(ids),)).fetchall())

    def audit(self, transaction_id) -> list[tuple]:
        return self.conn.execute(
            "SELECT old_status, new_status, reason_code, changed_by, dag_id, run_id, task_id, try_number, map_index "
            "FROM transaction_audit WHERE transaction_id = %s ORDER BY id", (transaction_id,)).fetchall()

    def reconciliation_gaps(self, numbers) -> list[tuple]:
        """Accounts whose balance differs from opening balance plus journal postings."""
        return self.conn.execute("""
            SELECT a.account_number, a.balance, a.opening_balance + coalesce(sum(
                       CASE p.direction WHEN 'CREDIT' THEN p.amount ELSE -p.amount END), 0)
              FROM accounts a LEFT JOIN journal_postings p USING (account_number)
             WHERE a.account_number = ANY(%s)
             GROUP BY a.account_number, a.balance, a.opening_balance
            HAVING a.balance <> a.opening_balance + coalesce(sum(
                       CASE p.direction WHEN 'CREDIT' THEN p.amount ELSE -p.amount END), 0)""",
                                 (list(numbers),)).fetchall()


def refused_and_rolled_back(conn, statement: str, error, match: str, params=None) -> None:
    """Run a statement that must be refused; should it not be, its effect is rolled back all the same
    (these tests share the database with whatever else runs)."""
    with pytest.raises(error, match=match), conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL lock_timeout = '10s'")
        conn.execute(statement, params)


def a_session_waits_for(holder, seconds: float = 10) -> bool:
    """Whether another session waits, within `seconds`, for a lock that the connection `holder` holds (asked on a
    connection of its own: a transaction sees pg_stat_activity as it was when it first looked). Any other session
    waiting for any lock would not do: the database is shared, and the interleaving named would not be shown."""
    conn = open_pg()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                            (holder.info.backend_pid,)).fetchone()[0]:
                return True
            time.sleep(0.05)
        return False
    finally:
        conn.close()


@pytest.fixture
def ledger(pg):
    return LedgerFixture(pg)
