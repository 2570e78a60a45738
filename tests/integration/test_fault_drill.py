"""The fault drill's checks (`make drill` runs the drill itself, by hand: it restarts the stack's services)."""

from airflow.providers.redis.hooks.redis import RedisHook

from include.bench.fault_drill import CHECKS, redis_records_that_disagree
from ledgerflow import topology
from ledgerflow.core.audit import AuditContext
from ledgerflow.store.ledger import settle
from ledgerflow.store.redis_projection import project

AIRFLOW = AuditContext(changed_by="airflow", dag_id="ledgerflow_settle", run_id="manual__drill", task_id="settle",
                       try_number=1, map_index=-1)


def test_the_drill_counts_each_broken_promise_of_its_load_and_nothing_else(ledger):
    """Two transfers cleared by hand (audit rows naming no run) and settled, one record tampered with and one
    never written; a third rejected by hand (a third such row) without its record; a fourth still pending, with no
    audit trail yet. The rest of the load keeps its promises, and the database refuses the other breaches outright
    (tests/integration/test_schema.py)."""
    source, destination = ledger.accounts("100.00", "0.00")
    tampered, unrecorded = ledger.transactions(*[(source, destination, "10.00")] * 2, status="cleared")
    ledger.transactions((source, destination, "10.00"), status="rejected")
    ledger.transactions((source, destination, "10.00"))
    settle(ledger.conn, [tampered, unrecorded], AIRFLOW)
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    redis_client.delete(f"settlement:{unrecorded}")
    project(ledger.conn, redis_client, [tampered])
    redis_client.hset(f"settlement:{tampered}", "from_balance_after", "90.01")

    counts = {name: ledger.conn.execute(sql, {"like": f"{ledger.prefix}-%"}).fetchone()[0]
              for name, sql in CHECKS.items()}

    assert counts == {
        "transfers not settled or rejected": 1,
        "accounts below zero": 0,
        "accounts whose balance is not their opening balance plus their postings": 0,
        "money created or destroyed (the balances' sum against the opening balances', in cents)": 0,
        "transfers settled without exactly one debit and one credit of their amount, or postings of others": 0,
        "transfers whose audit trail enters a status twice, ends elsewhere than their status, or is missing": 1,
        "status changes that do not name the Airflow run and task that made them": 3,
    }
    assert redis_records_that_disagree(ledger.conn, f"{ledger.prefix}-%") == 3


def test_each_check_counts_the_rows_that_break_its_promise(ledger):
    """The schema refuses most of these breaches outright, so the drill's checks, its backstops, are tried on
    tables of their own: temporary ones, which this session finds before the pipeline's."""
    like = {"like": "P-%"}
    with ledger.conn.transaction(force_rollback=True):
        for table in ("accounts (account_number text, balance numeric, opening_balance numeric)",
                      "transactions (transaction_id text, status text, from_account text, to_account text, "
                      "amount numeric)",
                      "journal_postings (transaction_id text, account_number text, direction text, amount numeric)",
                      "transaction_audit (id serial, transaction_id text, new_status text, dag_id text, run_id text, "
                      "task_id text)"):
            ledger.conn.execute(f"CREATE TEMPORARY TABLE {table} ON COMMIT DROP")
        # T1 settled as settle does; T2 settled with a credit of another amount; T3 pending, never audited, with a
        # posting; T4 audited into cleared twice; T5's trail ends in cleared; A3 below zero since it opened; A4
        # moved by 5.00 without a posting
        ledger.conn.execute("""
            INSERT INTO accounts VALUES ('P-A1', 90, 100), ('P-A2', 110, 100), ('P-A3', -1, -1), ('P-A4', 105, 100),
                                        ('P-A5', 90, 100), ('P-A6', 109, 100);
            INSERT INTO transactions VALUES ('P-T1', 'settled', 'P-A1', 'P-A2', 10), ('P-T2', 'settled', 'P-A5', 'P-A6', 10),
                                            ('P-T3', 'pending', 'P-A1', 'P-A2', 0), ('P-T4', 'settled', 'P-A1', 'P-A2', 0),
                                            ('P-T5', 'settled', 'P-A1', 'P-A2', 0);
            INSERT INTO journal_postings VALUES ('P-T1', 'P-A1', 'DEBIT', 10), ('P-T1', 'P-A2', 'CREDIT', 10),
                                                ('P-T2', 'P-A5', 'DEBIT', 10), ('P-T2', 'P-A6', 'CREDIT', 9),
                                                ('P-T3', 'P-A1', 'DEBIT', 0), ('P-T4', 'P-A1', 'DEBIT', 0),
                                                ('P-T4', 'P-A2', 'CREDIT', 0), ('P-T5', 'P-A1', 'DEBIT', 0),
                                                ('P-T5', 'P-A2', 'CREDIT', 0);
            INSERT INTO transaction_audit (transaction_id, new_status, dag_id, run_id, task_id) VALUES
                ('P-T1', 'cleared', 'd', 'r', 't'), ('P-T1', 'settled', 'd', 'r', 't'),
                ('P-T2', 'cleared', 'd', 'r', 't'), ('P-T2', 'settled', NULL, NULL, NULL),
                ('P-T4', 'cleared', 'd', 'r', 't'), ('P-T4', 'cleared', 'd', 'r', 't'), ('P-T4', 'settled', 'd', 'r', 't'),
                ('P-T5', 'settled', 'd', 'r', 't'), ('P-T5', 'cleared', 'd', 'r', 't')""")

        counts = {name: ledger.conn.execute(sql, like).fetchone()[0] for name, sql in CHECKS.items()}

    assert counts == {
        "transfers not settled or rejected": 1,  # T3
        "accounts below zero": 1,  # A3
        "accounts whose balance is not their opening balance plus their postings": 1,  # A4
        "money created or destroyed (the balances' sum against the opening balances', in cents)": 400,  # A4, A6
        "transfers settled without exactly one debit and one credit of their amount, or postings of others": 2,  # T2, T3
        "transfers whose audit trail enters a status twice, ends elsewhere than their status, or is missing": 3,  # T3-T5
        "status changes that do not name the Airflow run and task that made them": 1,  # T2's settlement
    }
