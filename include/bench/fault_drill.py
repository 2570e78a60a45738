"""A fault drill: faults injected while the scheduler-driven pipeline takes a load, then its promises checked.

    include/stack/with-env python -m include.bench.fault_drill [--count 150000] [--rate 2500] [--accounts 300]

`make drill` runs it. It unpauses produce, clear and settle and inserts a stream of transfers between accounts whose
balances refuse many of them. Every 4 to 9 s it injects one fault, in rounds of eight in random order, each a
SIGKILL or a restart of a process of this stack: three of the process of a running task (its try fails, and its
retry, or the next run, takes its batch up again), one of the worker supervising a task (the task stops draining,
and Airflow fails it once its heartbeats are missed), one of a worker as it takes a task, before it starts it (the
task stays queued until the scheduler schedules it again; a kill that comes too late counts as the one before, and
is tried again), one of the scheduler (supervisord starts it again, and it resets the tasks the dead one started), a
restart of Kafka and one of Redis. The first fault once the inserts are done is a restart of PostgreSQL (the
inserting client does not reconnect). The faults go on until a minute after the last insert, and then until every
kind has happened, for at most 4 minutes more (a kill waits while there is nothing to kill). Then it waits until
every transfer of the load is settled or rejected, and checks what the pipeline promises whatever was retried,
redelivered or restarted (see CHECKS; some the schema enforces itself, and are there as backstops). It prints each
fault and each check, and exits 1 if a check fails, a kind of fault never happened, or injecting one failed. The
DAGs are paused afterwards as they were. The seed (printed) repeats the load and the faults' order, not their timing
against the pipeline's.
"""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from decimal import Decimal, InvalidOperation

import httpx
import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.redis.hooks.redis import RedisHook

from include.airflow_control import TASK_PROCESS_TITLE, AirflowApi, parent_of, task_processes_on_this_machine
from include.bench.pipeline_bench import with_dags
from include.generate_transactions import create_accounts, insert, transfers
from ledgerflow import topology

STACK = f"{os.environ['LEDGERFLOW_ROOT']}/include/stack/stack.sh"
SUPERVISORCTL = [f"{os.environ['LEDGERFLOW_VENV']}/bin/supervisorctl",
                 "-c", f"{os.environ['LEDGERFLOW_STATE']}/supervisor/supervisord.conf"]
A_ROUND_OF_FAULTS = ["kill task"] * 3 + ["kill task supervisor", "kill worker taking a task", "kill scheduler",
                                          "restart kafka", "restart redis"]
FAULT_KINDS = {*A_ROUND_OF_FAULTS, "restart postgres"}
IDLE = "<idle>"  # the task id in an executor's worker's title between tasks
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
FAULTS_AFTER_THE_INSERTS_SECONDS = 60
# On a slow run a minute after the inserts can end before every kind has happened: a kill that finds nothing to kill
# (no task running, or the worker took its task too late) waits for a later turn, and turns are 4 to 9 s apart.
MORE_FAULTS_FOR_A_MISSING_KIND_SECONDS = 240

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


def scheduler_pid() -> int | None:
    """This stack's scheduler's process id; None while supervisord restarts it."""
    pid = int(subprocess.run([*SUPERVISORCTL, "pid", "airflow:airflow-scheduler"], capture_output=True,
                             text=True).stdout.strip() or 0)
    return pid or None  # supervisorctl answers 0 for a program not running: never a pid to signal


def processes_to_kill(fault: str) -> list[int]:
    """The processes of this stack that `fault` may kill: its scheduler, the running tasks its executor's workers
    started (not those of another stack on the machine), the workers that supervise a task that has started, or
    the idle workers, one of which takes the next task."""
    if not (scheduler := scheduler_pid()):
        return []
    if fault == "kill scheduler":
        return [scheduler]
    processes = task_processes_on_this_machine()
    parents = {p.pid: parent_of(p.pid) for p in processes}  # read once: a pid may end and be reused
    workers = [p for p in processes if p.supervisor and parents[p.pid] == scheduler]
    if fault == "kill worker taking a task":
        return [p.pid for p in workers if p.task_instance_id == IDLE]
    workers = {p.pid for p in workers}
    # a task's process takes a title of its own once it starts: before, it has its worker's
    tasks = [p.pid for p in processes if not p.supervisor and parents[p.pid] in workers]
    return sorted(tasks if fault == "kill task" else {parents[pid] for pid in tasks})


def kill_the_first_to_take_a_task(idle_workers: list[int], seconds: float = 10) -> tuple[int, str] | None:
    """Kills the first of `idle_workers` to take a task, as it retitles itself, before it starts the task (if quick
    enough: see `still_queued`): the task stays queued, with no process to start or fail it. Returns the worker's
    pid and the task instance's id, or None if no worker takes a task within `seconds`."""
    titles = {}
    for pid in idle_workers:
        with suppress(OSError):  # ended meanwhile
            titles[pid] = open(f"/proc/{pid}/cmdline", "rb")
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for pid, title in titles.items():
                title.seek(0)
                try:
                    taken = TASK_PROCESS_TITLE.match(title.read().split(b"\0")[0])
                except OSError:  # ended meanwhile
                    taken = None
                if taken and UUID.fullmatch(taken.group(1)) and kill(pid):  # a task's, not <idle> or a callback
                    return pid, taken.group(1).decode()
            time.sleep(0.002)  # the window until the task starts is tens of milliseconds
        return None
    finally:
        for title in titles.values():
            title.close()


def still_queued(api: AirflowApi, task_instance_id: str) -> bool | None:
    """Whether the task instance is queued a second from now: its worker was killed before it started it. None if
    the API cannot tell now (PostgreSQL restarting, say)."""
    time.sleep(1)
    try:
        return task_instance_id in api.queued_task_instance_ids()
    except httpx.HTTPError:
        return None


def kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:  # it ended meanwhile
        return False


def restart(service: str) -> None:
    result = subprocess.run([*SUPERVISORCTL, "restart", f"services:{service}"], capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"supervisorctl restart services:{service} failed: {result.stdout}{result.stderr}")


class FaultOrder:
    """The order of the faults: rounds of A_ROUND_OF_FAULTS, each in random order. A fault that could not be done
    (a kill with nothing to kill, after a scheduler's kill for a while, or a worker that took no task) is set aside
    and tried first at later turns, before the round's next fault rather than instead of it: a kill that keeps
    failing must not hold the round up, or the drill would miss the other kinds."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.round, self.set_aside = rng, [], []

    def this_turn(self, doable: Callable[[str], bool]) -> Iterator[str]:
        """The faults to try this turn, in order, until one is done: the first set-aside one that `doable` finds
        something for, then the round's next. Each is taken out of the order as it is yielded."""
        if (fault := next((f for f in self.set_aside if doable(f)), None)) is not None:
            self.set_aside.remove(fault)
            yield fault
        self.round = self.round or self.rng.sample(A_ROUND_OF_FAULTS, len(A_ROUND_OF_FAULTS))
        yield self.round.pop()


def inject_faults(api: AirflowApi, until: threading.Event, inserting: threading.Event, rng: random.Random,
                  faults: list[str]) -> None:
    """One fault every 4 to 9 s until `until` is set, appended to `faults` as it is done. PostgreSQL is restarted
    once, first thing after `inserting` is clear."""
    started, order, postgres_restarted = time.monotonic(), FaultOrder(rng), False

    def done(fault: str, detail: str = "") -> bool:
        faults.append(fault)
        print(f"  {time.monotonic() - started:6.1f} s  {fault}{detail}", flush=True)
        return True

    def attempt(fault: str) -> bool:
        """Does `fault`, or sets it aside; whether a process was killed or a service restarted."""
        if not fault.startswith("kill"):
            restart(fault.split()[1])
            return done(fault)
        pids = processes_to_kill(fault)
        if fault == "kill worker taking a task":
            if not pids or not (taken := kill_the_first_to_take_a_task(pids)):
                order.set_aside.append(fault)
                return False
            pid, task_instance_id = taken
            queued = still_queued(api, task_instance_id)
            if queued:
                return done(fault, f" (pid {pid}, task instance {task_instance_id})")
            order.set_aside.append(fault)
            if queued is None:  # killed, but whether before the task started is not known: not counted
                print(f"  {time.monotonic() - started:6.1f} s  ({fault}: pid {pid}, task instance "
                      f"{task_instance_id}, not counted: its state could not be read)", flush=True)
                return True
            # killed too late, once its task had started
            return done("kill task supervisor", f" (pid {pid}, task instance {task_instance_id})")
        if not pids or not kill(pid := rng.choice(pids)):
            order.set_aside.append(fault)
            return False
        return done(fault, f" (pid {pid})")

    while not until.wait(rng.uniform(4, 9)):
        if not inserting.is_set() and not postgres_restarted:
            postgres_restarted = attempt("restart postgres")
            continue
        for fault in order.this_turn(lambda f: bool(processes_to_kill(f))):
            if attempt(fault):
                break


def wait_for_every_kind(faults: list[str], injecting: threading.Thread, at_most: float) -> None:
    """Returns once `faults`, which the `injecting` thread appends to, holds every kind of fault, once that thread
    has ended (it failed), or after `at_most` seconds."""
    deadline = time.monotonic() + at_most
    while not FAULT_KINDS <= set(faults) and injecting.is_alive() and time.monotonic() < deadline:
        time.sleep(0.5)


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
    wrong = sum(not _are(fields, (debit, credit)) for (_, debit, credit), fields in zip(settled, answers))
    return wrong + answers[len(settled):].count(0)


def _are(fields: list[bytes | None], amounts: tuple[Decimal, Decimal]) -> bool:
    try:
        return None not in fields and tuple(Decimal(field.decode()) for field in fields) == amounts
    except (InvalidOperation, UnicodeDecodeError):
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=150_000, help="transfers to insert")
    parser.add_argument("--rate", type=float, default=2500, help="transfers per second")
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=900, help="give up waiting after this many seconds")
    parser.add_argument("--seed", type=int, default=None, help="of the load and of the faults (printed if not given)")
    args = parser.parse_args()
    seed = random.randrange(2 ** 32) if args.seed is None else args.seed
    failed = []

    def body(_unpaused_at):
        load_rng, fault_rng = random.Random(seed), random.Random(seed + 1)
        conn = open_pg()
        prefix = f"F{load_rng.getrandbits(32):08x}"
        # 10,000.00 each against transfers of up to 400.00: the busiest accounts run dry, and many are refused
        accounts = create_accounts(conn, prefix, args.accounts, Decimal("10000.00"), load_rng)
        rows = transfers(prefix, accounts, args.count, 100, 40000, 0.2, 5, load_rng)
        until, inserting = threading.Event(), threading.Event()
        inserting.set()
        faults: list[str] = []
        errors: list[BaseException] = []

        def injecting():
            try:
                inject_faults(AirflowApi(), until, inserting, fault_rng, faults)
            except BaseException as error:  # reported below: a drill whose faults stopped must not pass
                errors.append(error)

        faulting = threading.Thread(target=injecting)
        print(f"drill {prefix} (--seed {seed}): {args.count:,} transfers at {args.rate:,.0f}/s between "
              f"{args.accounts} accounts; faults:")
        faulting.start()
        try:
            insert(conn, rows, args.count, args.rate)
            last_insert = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            inserting.clear()
            conn.close()
            until.wait(FAULTS_AFTER_THE_INSERTS_SECONDS)
            wait_for_every_kind(faults, faulting, MORE_FAULTS_FOR_A_MISSING_KIND_SECONDS)
        finally:
            until.set()
            faulting.join()
        faults_ended = time.monotonic()
        if errors:
            failed.append(f"injecting a fault failed: {errors[0]!r}")
        counts = {kind: faults.count(kind) for kind in sorted(FAULT_KINDS)}
        failed.extend(f"no {kind}" for kind, count in counts.items() if not count)
        terminal = wait_until_terminal(f"{prefix}-%", args.timeout)
        # The scheduler's restart ends what the killed one left (its executor's workers, each waiting for work for
        # ever, and its log server, which holds the log port): anything this finds is a leak.
        leftovers = subprocess.run([STACK, "leftovers"], check=True, capture_output=True, text=True).stdout
        print(leftovers, end="")
        if terminal:
            print(f"{len(faults)} faults ({', '.join(f'{kind}: {n}' for kind, n in counts.items())}); every transfer "
                  f"settled or rejected {time.monotonic() - faults_ended:.0f} s after the faults ended")
        else:
            print(f"{len(faults)} faults; not every transfer settled or rejected {args.timeout:.0f} s after the "
                  f"faults ended")
        with open_pg() as conn:
            statuses = dict(conn.execute("SELECT status, count(*) FROM transactions WHERE transaction_id LIKE %s "
                                         "GROUP BY 1", (f"{prefix}-%",)).fetchall())
            last_change = conn.execute("SELECT max(status_changed_at) FROM transactions WHERE transaction_id LIKE %s",
                                       (f"{prefix}-%",)).fetchone()[0]
            if last_change:
                print(f"the last status change came {(last_change - last_insert).total_seconds():.1f} s after "
                      f"the last insert")
            print("Checks, each counting what breaks a promise:")
            results = {name: conn.execute(sql, {"like": f"{prefix}-%"}).fetchone()[0] for name, sql in CHECKS.items()}
            results["settled or rejected transfers whose Redis record is missing or disagrees with the postings"] = \
                redis_records_that_disagree(conn, f"{prefix}-%")
        results["process groups that killed Airflow programs left running after their restart"] = \
            leftovers.count("ending what a killed Airflow program left")
        for name, count in results.items():
            print(f"  {count:>8}  {name}")
        print(f"statuses: {statuses}")
        failed.extend(name for name, count in results.items() if count)

    with_dags(AirflowApi(), unpaused=True, body=body)
    for failure in failed:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
