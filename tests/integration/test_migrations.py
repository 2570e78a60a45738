"""Migrations that mend or refuse the rows written before them, tried on a schema of their own.

Each test applies the migrations before the one under test to a new schema, in a transaction that it rolls
back, writes the rows that migration has to deal with, then applies it: the pipeline's own tables are
neither read nor changed.
"""

import uuid
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
import pytest

from include.stack.migrate import pending_migrations
from tests.integration.conftest import refused_and_rolled_back

MIGRATIONS = pending_migrations({})  # every migration, in the order make migrate applies them


def migration(prefix: str):
    [path] = [path for path in MIGRATIONS if path.name.startswith(prefix)]
    return path


@contextmanager
def schema_migrated_up_to(conn, prefix: str):
    """A new schema holding every migration before the one named by `prefix`, with one customer ('C') and
    two accounts ('A1', 'A2'); rolled back on exit."""
    with conn.transaction(force_rollback=True):
        schema = f"migration_check_{uuid.uuid4().hex[:8]}"
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET LOCAL search_path TO {schema}")
        for path in MIGRATIONS[:MIGRATIONS.index(migration(prefix))]:
            conn.execute(path.read_text())
        conn.execute("INSERT INTO customers (customer_id, name, risk_level) VALUES ('C', 'Customer', 'LOW')")
        conn.execute("INSERT INTO accounts (account_number, customer_id, account_type, balance) "
                     "VALUES ('A1', 'C', 'CHECKING', 100.00), ('A2', 'C', 'CHECKING', 100.00)")
        yield


def insert_transaction(conn, transaction_id: str, reason_code: str | None = None) -> None:
    conn.execute("INSERT INTO transactions (transaction_id, amount, from_account, to_account, status_reason_code) "
                 "VALUES (%s, 10.00, 'A1', 'A2', %s)", (transaction_id, reason_code))


def status_and_reason(conn, transaction_id: str) -> tuple[str, str | None]:
    return conn.execute("SELECT status, status_reason_code FROM transactions WHERE transaction_id = %s",
                        (transaction_id,)).fetchone()


def test_0018_drops_the_reason_a_pending_transaction_was_given_and_then_refuses_one(pg):
    with schema_migrated_up_to(pg, "0018"):
        insert_transaction(pg, "X", reason_code="CLEARED")  # accepted before 0018

        pg.execute(migration("0018").read_text())

        assert status_and_reason(pg, "X") == ("pending", None)
        refused_and_rolled_back(pg, "UPDATE transactions SET status_reason_code = 'CLEARED' WHERE transaction_id = 'X'",
                                psycopg.errors.CheckViolation, "transactions_pending_without_a_reason")


@pytest.mark.parametrize(("reason_code", "shown_as"), [("CLEARED", "CLEARED"), (None, "NULL")])
def test_0019_stops_on_a_transaction_left_without_a_reason_of_its_status_and_says_how_to_mend_it(
        pg, reason_code, shown_as):
    with schema_migrated_up_to(pg, "0019"):
        insert_transaction(pg, "X")
        # changes by hand that the migrations before 0019 let through
        pg.execute("UPDATE transactions SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED' "
                   "WHERE transaction_id = 'X'")
        pg.execute("UPDATE transactions SET status_reason_code = %s WHERE transaction_id = 'X'", (reason_code,))
        assert status_and_reason(pg, "X") == ("rejected", reason_code)

        refused_and_rolled_back(pg, migration("0019").read_text(), psycopg.errors.ForeignKeyViolation,
                                f"transaction X is rejected with reason code {shown_as}, not one of that status's: "
                                r"give it .* one \(transaction_status_reasons; REVIEW_DECLINED for one rejected by "
                                r"hand\), then migrate again")

        pg.execute("UPDATE transactions SET status_reason_code = 'REVIEW_DECLINED' WHERE transaction_id = 'X'")
        pg.execute(migration("0019").read_text())  # mended as the error says, the row passes

        assert status_and_reason(pg, "X") == ("rejected", "REVIEW_DECLINED")
        refused_and_rolled_back(pg, "UPDATE transactions SET status_reason_code = 'CLEARED' WHERE transaction_id = 'X'",
                                psycopg.errors.ForeignKeyViolation, "cannot be rejected with reason code CLEARED")


@pytest.mark.parametrize("column", ["description", "status_message"])
def test_0021_stops_on_a_transaction_whose_free_text_would_not_fit_in_a_message(pg, column):
    with schema_migrated_up_to(pg, "0021"):
        insert_transaction(pg, "X")
        pg.execute(f"UPDATE transactions SET {column} = repeat('x', 1001) WHERE transaction_id = 'X'")

        refused_and_rolled_back(pg, migration("0021").read_text(), psycopg.errors.CheckViolation,
                                "transaction X has a description of .* characters: shorten any over 1,000")

        pg.execute(f"UPDATE transactions SET {column} = left({column}, 1000) WHERE transaction_id = 'X'")
        pg.execute(migration("0021").read_text())  # shortened as the error says, the row passes

        refused_and_rolled_back(pg, f"UPDATE transactions SET {column} = {column} || 'x' WHERE transaction_id = 'X'",
                                psycopg.errors.CheckViolation, "_within_a_message")


@pytest.mark.parametrize(("account", "balance", "journal"), [("A1", "1090.00", "90.00"),
                                                            ("A3", "1100.00", "100.00")])  # one without postings
def test_0023_stops_on_an_account_whose_balance_is_not_its_opening_balance_plus_its_postings(
        pg, account, balance, journal):
    with schema_migrated_up_to(pg, "0023"):
        pg.execute("INSERT INTO accounts (account_number, customer_id, account_type, balance) "
                   "VALUES ('A3', 'C', 'CHECKING', 100.00)")
        insert_transaction(pg, "X")  # 10.00 from A1 to A2, settled as settle does
        pg.execute("SET LOCAL ledgerflow.settling = 'on'")
        pg.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED'")
        pg.execute("UPDATE transactions SET status = 'settled', status_reason_code = 'SETTLED'")
        pg.execute("UPDATE accounts SET balance = balance + CASE account_number WHEN 'A1' THEN -10 ELSE 10 END "
                   "WHERE account_number IN ('A1', 'A2')")
        pg.execute("INSERT INTO journal_postings (transaction_id, account_number, direction, amount, balance_after) "
                   "VALUES ('X', 'A1', 'DEBIT', 10.00, 90.00), ('X', 'A2', 'CREDIT', 10.00, 110.00)")
        pg.execute("SET LOCAL ledgerflow.settling = 'off'")
        pg.execute("UPDATE accounts SET balance = balance + 1000.00 WHERE account_number = %s", (account,))  # by hand

        refused_and_rolled_back(pg, migration("0023").read_text(), psycopg.errors.CheckViolation,
                                f"account {account} has the balance {balance}, but its opening balance and journal "
                                f"postings make {journal}")

        pg.execute("UPDATE accounts SET balance = %s WHERE account_number = %s", (journal, account))
        pg.execute(migration("0023").read_text())  # mended, the accounts add up

        refused_and_rolled_back(pg, "UPDATE accounts SET balance = 0.00 WHERE account_number = 'A1'",
                                psycopg.errors.CheckViolation, "account A1: its balance changes only with")


def test_0024_gives_a_transaction_past_pending_without_a_time_the_time_its_audit_trail_gives(pg):
    with schema_migrated_up_to(pg, "0024"):
        pg.execute("INSERT INTO transactions (transaction_id, amount, from_account, to_account, created_at) VALUES "
                   "('audited', 10.00, 'A1', 'A2', '2020-01-01T00:00:00Z'), "
                   "('unaudited', 10.00, 'A1', 'A2', '2020-01-02T00:00:00Z')")
        pg.execute("UPDATE transactions SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED' "
                   "WHERE transaction_id = 'audited'")
        # as the pipeline left rows before 0003 stamped them: the audit trail says when (not the migration's now()),
        # or, for a row changed before the audit trail began (0002), nothing does
        pg.execute("ALTER TABLE transaction_audit DISABLE TRIGGER transaction_audit_append_only")
        pg.execute("UPDATE transaction_audit SET changed_at = '2021-01-01T00:00:00Z'")
        pg.execute("ALTER TABLE transactions DISABLE TRIGGER transactions_audit_status")
        pg.execute("UPDATE transactions SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED' "
                   "WHERE transaction_id = 'unaudited'")
        pg.execute("UPDATE transactions SET status_changed_at = NULL")

        pg.execute(migration("0024").read_text())

        times = dict(pg.execute("SELECT transaction_id, status_changed_at FROM transactions").fetchall())
        assert times == {"audited": datetime(2021, 1, 1, tzinfo=UTC), "unaudited": datetime(2020, 1, 2, tzinfo=UTC)}
        refused_and_rolled_back(pg, "UPDATE transactions SET status_changed_at = NULL WHERE transaction_id = 'audited'",
                                psycopg.errors.CheckViolation, "its status time changes only with its status")


def test_0026_rejects_the_transactions_an_empty_identifier_stopped_and_then_refuses_one(pg):
    with schema_migrated_up_to(pg, "0026"):
        pg.execute("INSERT INTO customers (customer_id, name) VALUES ('', 'Nobody')")
        pg.execute("INSERT INTO accounts (account_number, customer_id, account_type, balance) "
                   "VALUES ('', 'C', 'CHECKING', 100.00)")
        pg.execute("INSERT INTO transactions (transaction_id, amount, from_account, to_account) VALUES "
                   "('', 1.00, 'A1', 'A2'), ('TO-EMPTY', 1.00, 'A1', ''), ('FINE', 1.00, 'A1', 'A2')")
        pg.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED' "
                   "WHERE transaction_id = 'TO-EMPTY'")

        pg.execute(migration("0026").read_text())

        assert {i: status_and_reason(pg, i) for i in ("", "TO-EMPTY", "FINE")} == {
            "": ("rejected", "REVIEW_DECLINED"), "TO-EMPTY": ("rejected", "REVIEW_DECLINED"), "FINE": ("pending", None)}
        for statement, constraint in [
                ("INSERT INTO transactions (transaction_id, amount, from_account, to_account) "
                 "VALUES ('', 1.00, 'A1', 'A2')", "transactions_transaction_id_not_empty"),
                ("INSERT INTO transactions (transaction_id, amount, from_account, to_account) "
                 "VALUES ('FROM-EMPTY', 1.00, '', 'A2')", "transactions_accounts_not_empty"),
                ("INSERT INTO accounts (account_number, customer_id, account_type, balance) "
                 "VALUES ('A4', '', 'CHECKING', 1.00)", "accounts_customer_id_not_empty"),
        ]:
            refused_and_rolled_back(pg, statement, psycopg.errors.CheckViolation, constraint)


def test_0026_stops_on_an_account_held_by_an_empty_id_customer_and_says_how_to_mend_it(pg):
    with schema_migrated_up_to(pg, "0026"):
        pg.execute("INSERT INTO customers (customer_id, name) VALUES ('', 'Nobody')")
        pg.execute("INSERT INTO accounts (account_number, customer_id, account_type, balance) "
                   "VALUES ('A3', '', 'CHECKING', 100.00)")

        refused_and_rolled_back(pg, migration("0026").read_text(), psycopg.errors.CheckViolation,
                                "account A3 is held by a customer with an empty id: give it a customer")
        pg.execute("UPDATE accounts SET customer_id = 'C' WHERE customer_id = ''")
        pg.execute(migration("0026").read_text())


def test_0030_stops_on_a_transaction_created_at_a_time_the_pipeline_cannot_read_and_then_refuses_one(pg):
    with schema_migrated_up_to(pg, "0030"):
        pg.execute("INSERT INTO transactions (transaction_id, amount, from_account, to_account, created_at) "
                   "VALUES ('X', 10.00, 'A1', 'A2', '-infinity')")  # accepted before 0030

        refused_and_rolled_back(pg, migration("0030").read_text(), psycopg.errors.CheckViolation,
                                r"transaction X was created at -infinity, which the pipeline cannot read: give it the "
                                r"time it was created \(UPDATE transactions SET created_at = \.\.\.")

        pg.execute("UPDATE transactions SET created_at = '2020-01-01T00:00:00Z' WHERE transaction_id = 'X'")
        pg.execute(migration("0030").read_text())  # mended as the error says, the row passes

        for created_at in ("infinity", "-infinity", "0001-01-01 00:00:00+00", "10000-01-01 00:00:00+00"):
            refused_and_rolled_back(pg, "INSERT INTO transactions (transaction_id, amount, from_account, to_account, "
                                        "created_at) VALUES ('Y', 10.00, 'A1', 'A2', %s)",
                                    psycopg.errors.CheckViolation, "transactions_created_at_readable", (created_at,))
        pg.execute("INSERT INTO transactions (transaction_id, amount, from_account, to_account, created_at) "
                   "VALUES ('Y', 10.00, 'A1', 'A2', '0002-01-01 00:00:00+00')")


def test_0031_records_as_published_what_the_pipeline_decided_and_not_what_was_changed_by_hand(pg):
    with schema_migrated_up_to(pg, "0031"):
        for transaction_id in ("decided", "by hand", "pending"):
            insert_transaction(pg, transaction_id)
        # as clear left a row that a killed produce run published and did not record (its audit names the run)
        pg.execute("SELECT set_config('ledgerflow.dag_id', 'ledgerflow_clear', true)")
        pg.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED' "
                   "WHERE transaction_id = 'decided'")
        pg.execute("SELECT set_config('ledgerflow.dag_id', '', true)")
        pg.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED' "
                   "WHERE transaction_id = 'by hand'")
        # the decision was made before the migration's transaction began (its now())
        pg.execute("ALTER TABLE transaction_audit DISABLE TRIGGER transaction_audit_append_only")
        pg.execute("UPDATE transaction_audit SET changed_at = '2021-01-01T00:00:00Z'")

        pg.execute(migration("0031").read_text())

        assert dict(pg.execute("SELECT transaction_id, published_at FROM transactions").fetchall()) == {
            "decided": datetime(2021, 1, 1, tzinfo=UTC), "by hand": None, "pending": None}


def test_0032_clears_the_status_time_a_pending_transaction_was_given_and_then_refuses_one(pg):
    with schema_migrated_up_to(pg, "0032"):
        pg.execute("INSERT INTO transactions (transaction_id, amount, from_account, to_account, status_changed_at) "
                   "VALUES ('X', 10.00, 'A1', 'A2', 'infinity')")  # accepted before 0032: clear could not read it
        insert_transaction(pg, "decided")
        pg.execute("UPDATE transactions SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED' "
                   "WHERE transaction_id = 'decided'")
        decided_at = pg.execute("SELECT status_changed_at FROM transactions WHERE transaction_id = 'decided'").fetchone()

        pg.execute(migration("0032").read_text())

        assert pg.execute("SELECT transaction_id, status_changed_at FROM transactions ORDER BY transaction_id"
                          ).fetchall() == [("X", None), ("decided", *decided_at)]
        refused_and_rolled_back(pg, "UPDATE transactions SET status_changed_at = now() WHERE transaction_id = 'X'",
                                psycopg.errors.CheckViolation,
                                "its status time changes only with its status")  # 0024's guard is on again
        for column, value, refusal in (
                ("status_changed_at", "infinity", "transaction Y cannot be inserted with a status time"),
                ("published_at", "2026-01-01T00:00:00Z", "transaction Y cannot be inserted published"),
                ("status", "cleared", "transaction Y cannot be inserted cleared")):
            refused_and_rolled_back(pg, f"INSERT INTO transactions (transaction_id, amount, from_account, to_account, "
                                        f"{column}) VALUES ('Y', 10.00, 'A1', 'A2', %s)",
                                    psycopg.errors.CheckViolation, refusal, (value,))
