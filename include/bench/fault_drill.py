"""A fault drill: faults injected while the scheduler-driven pipeline takes a load, then its promises checked.

    include/stack/with-env python -m include.bench.fault_drill [--count 150000] [--rate 2500] [--accounts 300]

`make drill` runs it. It unpauses produce, clear and settle and inserts a stream of transfers between accounts
whose balances refuse many of them. Every 4 to 9 s it injects one fault, chosen at random:
  - SIGKILL to the process of a running task (two chances in three): its try fails, and its retry, or the
    next run, takes its batch up again;
  - a restart of Kafka, of Redis, or, once the inserts are done (their client does not reconnect), of PostgreSQL.
The faults go on until a minute after the last insert. Then it waits until every transfer of the load is settled
or rejected, and checks what the pipeline promises whatever was retried, redelivered or restarted (see CHECKS).
It prints each fault and each check, and exits 1 if a check fails. The DAGs are paused afterwards as they were.
"""

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.redis.hooks.redis import RedisHook

from include.airflow_control import AirflowApi, task_process_ids_here
from include.bench.pipeline_bench import with_dags
from include.generate_transactions import create_accounts, insert, transfers
from ledgerflow import topology

SUPERVISORCTL = [f"{os.environ['LEDGERFLOW_VENV']}/bin/supervisorctl",
                 "-c", f"{os.environ['LEDGERFLOW_STATE']}/supervisor/supervisord.conf"]
FAULTS = ["kill task"] * 6 + ["restart kafka", "restart redis", "restart postgres"]
FAULTS_AFTER_THE_INSERTS_SECONDS = 60

# Each check counts the load's rows (accounts or transactions, under the prefix %(like)s) that break a promise.
CHECKS = {
    "transfers not settled or rejected": """
        SELECT count(*) FROM transactions
         WHERE transaction_id LIKE %(like)s AND status NOT IN ('settled', 'rejected')""",
    "accounts below zero": """
        SELECT count(*) FROM accounts WHERE account_number LIKE %(like)s AND balance < 0""",
    "accounts whose balance is not their opening balance plus their postings": """
        SELECT count(*) FROM accounts a
          LEFT JOIN (SELECT account_number, sum(CASE direction WHEN 'CREDIT' THEN amount ELSE -amount END) AS net
                       FROM journal_postings WHERE account_number LIKE %(like)s GROUP BY 1) p USING (account_number)
         WHERE a.account_number LIKE %(like)s AND a.balance <> a.opening_balance + coalesce(p.net, 0)""",
    "money created or destroyed (the balances' sum against the opening balances', in cents)": """
        SELECT (abs(sum(balance) - sum(opening_balance)) * 100)::bigint FROM accounts
         WHERE account_number LIKE %(like)s""",
    "transfers settled without exactly one debit and one credit of their amount, or postings of others": """
        SELECT count(*) FROM transactions t
         CROSS JOIN LATERAL (
               SELECT count(*) AS postings,
                      count(*) FILTER (WHERE p.direction = 'DEBIT' AND p.account_number = t.from_account
                                         AND p.amount = t.amount) AS debits,
                      count(*) FILTER (WHERE p.direction = 'CREDIT' AND p.account_number = t.to_account
                                         AND p.amount = t.amount) AS credits
                 FROM journal_postings p WHERE p.transaction_id = t.transaction_id) p
         WHERE t.transaction_id LIKE %(like)s
           AND CASE WHEN t.status = 'settled' THEN (p.postings, p.debits, p.credits) <> (2, 1, 1)
                    ELSE p.postings <> 0 END""",
    "transfers whose audit trail enters a status twice, ends elsewhere than their status, or is missing": """
        SELECT count(*) FROM (
               SELECT t.transaction_id FROM transactions t
                 LEFT JOIN transaction_audit a USING (transaction_id)
                WHERE t.transaction_id LIKE %(like)s
                GROUP BY t.transaction_id, t.status
               HAVING count(a.id) = 0 OR count(a.id) <> count(DISTINCT a.new_status)
                   OR (array_agg(a.new_status ORDER BY a.id DESC))[1] <> t.status) broken""",
    "status changes that do not name the Airflow run and task that made them": """
        SELECT count(*) FROM transaction_audit
         WHERE transaction_id LIKE %(like)s AND (dag_id IS NULL OR run_id IS NULL OR task_id IS NULL)""",
}


def open_pg():
    conn = PostgresHook(postgres_conn_id=topology.POSTGRES_CONN_ID).get_conn()
    conn.autocommit = True
    return conn


def inject_faults(until: threading.Event, inserting: threading.Event, rng: random.Random) -> list[str]:
    """One fault every 4 to 9 s until `until` is set; PostgreSQL is restarted only once `inserting` is clear."""
    faults, started = [], time.monotonic()
    while not until.wait(rng.uniform(4, 9)):
        fault = rng.choice(FAULTS)
        if fault == "restart postgres" and inserting.is_set():
            fault = rng.choice(FAULTS[:-1])
        if fault == "kill task":
            if not (pids := task_process_ids_here()):
                continue
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # it ended meanwhile
                continue
            fault = f"{fault} (pid {pid})"
        else:
            subprocess.run([*SUPERVISORCTL, "restart", f"services:{fault.split()[1]}"], check=True,
                           capture_output=True)
        faults.append(f"{time.monotonic() - started:6.1f} s  {fault}")
        print(f"  {faults[-1]}", flush=True)
    return faults


def wait_until_terminal(like: str, timeout: float) -> bool:
    """Whether the load's transfers are all settled or rejected within `timeout`; PostgreSQL may be restarting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open_pg() as conn:
                if not conn.execute(CHECKS["transfers not settled or rejected"], {"like": like}).fetchone()[0]:
                    return True
        except psycopg.OperationalError:
            pass
        time.sleep(2)
    return False


def redis_records_that_disagree(conn, like: str) -> int:
    """Settled transfers without a settlement:{id} record whose after-balances are their postings', and rejected
    transfers without a rejected:{id} record."""
    settled = conn.execute("""
        SELECT t.transaction_id,
               max(p.balance_after) FILTER (WHERE p.direction = 'DEBIT'),
               max(p.balance_after) FILTER (WHERE p.direction = 'CREDIT')
          FROM transactions t JOIN journal_postings p USING (transaction_id)
         WHERE t.transaction_id LIKE %s AND t.status = 'settled' GROUP BY 1""", (like,)).fetchall()
    rejected = [i for (i,) in conn.execute("SELECT transaction_id FROM transactions "
                                           "WHERE transaction_id LIKE %s AND status = 'rejected'", (like,))]
    pipe = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn().pipeline(transaction=False)
    for transaction_id, _, _ in settled:
        pipe.hmget(f"settlement:{transaction_id}", "from_balance_after", "to_balance_after")
    for transaction_id in rejected:
        pipe.exists(f"rejected:{transaction_id}")
    answers = pipe.execute()
    wrong = sum(None in fields or (Decimal(fields[0].decode()), Decimal(fields[1].decode())) != (debit, credit)
                for (_, debit, credit), fields in zip(settled, answers))
    return wrong + answers[len(settled):].count(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=150_000, help="transfers to insert")
    parser.add_argument("--rate", type=float, default=2500, help="transfers per second")
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=900, help="give up waiting after this many seconds")
    parser.add_argument("--seed", type=int, default=None, help="of the load and of the faults")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    failed = []

    def body(_unpaused_at):
        conn = open_pg()
        prefix = f"F{rng.getrandbits(32):08x}"
        # 10,000.00 each against transfers of up to 400.00: the busiest accounts run dry, and many are refused
        accounts = create_accounts(conn, prefix, args.accounts, Decimal("10000.00"), rng)
        rows = transfers(prefix, accounts, args.count, 100, 40000, 0.2, 5, rng)
        until, inserting = threading.Event(), threading.Event()
        inserting.set()
        faults: list[str] = []
        faulting = threading.Thread(target=lambda: faults.extend(inject_faults(until, inserting, rng)))
        print(f"drill {prefix}: {args.count:,} transfers at {args.rate:,.0f}/s between {args.accounts} accounts; faults:")
        faulting.start()
        try:
            last_insert = insert(conn, rows, args.count, args.rate)
            inserting.clear()
            conn.close()
            time.sleep(FAULTS_AFTER_THE_INSERTS_SECONDS)
        finally:
            until.set()
            faulting.join()
        waited = time.monotonic()
        if wait_until_terminal(f"{prefix}-%", args.timeout):
            print(f"{len(faults)} faults; every transfer settled or rejected {time.monotonic() - waited:.0f} s after "
                  f"the last one")
        else:
            print(f"{len(faults)} faults; not every transfer settled or rejected {args.timeout:.0f} s after the last one")
        with open_pg() as conn:
            statuses = dict(conn.execute("SELECT status, count(*) FROM transactions WHERE transaction_id LIKE %s "
                                         "GROUP BY 1", (f"{prefix}-%",)).fetchall())
            last_change = conn.execute("SELECT extract(epoch FROM max(status_changed_at)) FROM transactions "
                                       "WHERE transaction_id LIKE %s", (f"{prefix}-%",)).fetchone()[0]
            print(f"the last status change came {float(last_change) - last_insert:.1f} s after the last insert")
            print("Checks, each counting what breaks a promise:")
            results = {name: conn.execute(sql, {"like": f"{prefix}-%"}).fetchone()[0] for name, sql in CHECKS.items()}
            results["settled or rejected transfers whose Redis record is missing or disagrees with the postings"] = \
                redis_records_that_disagree(conn, f"{prefix}-%")
        for name, count in results.items():
            print(f"  {count:>8}  {name}")
        print(f"statuses: {statuses}")
        failed.extend(name for name, count in results.items() if count)

    with_dags(AirflowApi(), unpaused=True, body=body)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
