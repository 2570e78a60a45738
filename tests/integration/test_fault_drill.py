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
