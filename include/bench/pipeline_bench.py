"""Benchmark the pipeline on the local stack and print its figures.

    include/stack/with-env python -m include.bench.pipeline_bench stages     [--count 100000] [--accounts 1000] [--hot]
                                                                             [--repeat 1]
    include/stack/with-env python -m include.bench.pipeline_bench end-to-end [--count 1000000]
    include/stack/with-env python -m include.bench.pipeline_bench latency    [--rate 1000] [--seconds 180]

stages      with the pipeline paused, loads a backlog, then runs produce, clear and settle one after the
            other with `airflow dags test`, each until its backlog is drained. Prints each stage's own
            rate inside its tasks (produce: first row read to last batch recorded as published; clear and
            settle: first message to last offset commit, as the tasks report it) and the tasks' peak memory;
            with --repeat N, N loads one after the other, then each stage's median rate and range.
end-to-end  unpauses the DAGs and, once the scheduler and triggerer drive them, loads the backlog in one
            transaction, so that all of it appears at once: the rate from that commit to its last terminal
            status.
latency     unpauses the DAGs and, once they are driven, inserts a steady stream; prints p50/p95/max from
            insert to terminal status.

--hot sends 10% of the transfers from 5 accounts. Each mode first drains what the pipeline has not
processed yet, so the figures are the benchmark's own; afterwards the DAGs are paused as they were before.
Run from the repository root (`make bench` does).
"""

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from airflow.providers.postgres.hooks.postgres import PostgresHook

from include.airflow_control import PIPELINE_DAGS, AirflowApi, run_dag
from include.bench.cpu import CpuMeter, CpuUse
from include.generate_transactions import create_accounts, insert, transfers
from ledgerflow import topology
from ledgerflow.core.states import TERMINAL, Status
from ledgerflow.store.kafka import group_backlog

# dag_id, task_id, the count in its summary, the topic and group it consumes
STAGES = [("ledgerflow_produce", "publish_new_transactions", "published", None, None),
          ("ledgerflow_clear", "clear_transactions", "messages", topology.TRANSACTIONS_TOPIC, topology.CLEAR_GROUP),
          ("ledgerflow_settle", "settle_transactions", "messages", topology.CLEARED_TOPIC, topology.SETTLE_GROUP)]
DRIVEN_DAGS = [stage[0] for stage in STAGES]
# manual review included: a load waiting for reviewers is not done, and its times would end at clear's
NOT_TERMINAL = tuple(status.value for status in Status if status not in TERMINAL)
# What each stage's runs must add up to, for a stage load of N, for its rate to be the load's: every transaction
# taken once, none a duplicate or a dead letter (a retried attempt's redelivered batches would be duplicates, cheap
# ones, and its failed attempt's time would not count).
STAGE_TALLIES = {"ledgerflow_produce": {"published": 1},
                 "ledgerflow_clear": {"messages": 1, "decided": 1, "duplicates": 0, "dead_lettered": 0},
                 "ledgerflow_settle": {"messages": 1, "settled+rejected_at_settlement": 1, "already_done": 0,
                                       "dead_lettered": 0}}
TARGETS = {"ledgerflow_produce": 100_000, "ledgerflow_clear": 50_000, "ledgerflow_settle": 50_000}  # tx/s, issue #4


class Load:
    """A benchmark's own accounts and transactions, under a unique prefix."""

    def __init__(self, conn, count: int, accounts: int, hot: bool, seed: int = 7):
        self.conn, self.count = conn, count
        self.prefix = f"B{uuid.uuid4().hex[:8]}"
        rng = random.Random(seed)
        # Ample balances: a transfer rejected for funds costs the same work, but the figures should be
        # those of the common case.
        numbers = create_accounts(conn, self.prefix, accounts, Decimal("100000000.00"), rng)
        self.rows = transfers(self.prefix, numbers, count, 100, 1200000, 0.1 if hot else 0.0, 5, rng)

    def insert(self, rate: float = 0, all_at_once: bool = False) -> float:
        """Insert the transactions (at `rate` per second, 0: as fast as COPY goes; `all_at_once`: in one
        transaction); the time of the last insert."""
        last_insert = insert(self.conn, self.rows, self.count, rate, all_at_once)
        self.first_id, self.last_id = self.conn.execute(
            "SELECT min(id), max(id) FROM transactions WHERE transaction_id = ANY(%s)",
            ([f"{self.prefix}-T0", f"{self.prefix}-T{self.count - 1}"],)).fetchone()
        return last_insert

    def first_not_terminal(self, from_id: int) -> int | None:
        """The id of the first of the load's transactions from `from_id` on that is not terminal yet. A range
        of the primary key, read up to the first such row: counting what is not terminal among the load's
        transactions scanned the whole table (status is in no index) every two seconds, a quarter of a core
        taken from the pipeline it measures."""
        row = self.conn.execute(
            "SELECT id FROM transactions WHERE id BETWEEN %s AND %s AND status = ANY(%s) AND transaction_id LIKE %s "
            "ORDER BY id LIMIT 1", (from_id, self.last_id, list(NOT_TERMINAL), f"{self.prefix}-%")).fetchone()
        return row[0] if row else None

    def wait_until_terminal(self, timeout: float) -> None:
        """Wait until every transaction of the load is terminal. A terminal status is final, so the ids
        before the first that is not terminal need no second look."""
        deadline = time.monotonic() + timeout
        frontier = self.first_id
        while (frontier := self.first_not_terminal(frontier)) is not None and time.monotonic() < deadline:
            print(f"\r  {self.last_id - frontier + 1:>9,} from the first not terminal yet to the last", end="",
                  file=sys.stderr, flush=True)
            time.sleep(2)
        print(file=sys.stderr)
        if frontier is not None:
            raise SystemExit(f"transaction id {frontier} and maybe others of the {self.count} were not terminal "
                             f"after {timeout:.0f}s")

    def latencies(self) -> list[float]:
        """Seconds from insert to terminal status, one per transaction."""
        return [row[0] for row in self.conn.execute(
            "SELECT extract(epoch FROM status_changed_at - created_at)::float8 FROM transactions "
            "WHERE transaction_id LIKE %s", (f"{self.prefix}-%",))]

    def last_terminal_at(self) -> float:
        return self.conn.execute("SELECT extract(epoch FROM max(status_changed_at))::float8 FROM transactions "
                                 "WHERE transaction_id LIKE %s", (f"{self.prefix}-%",)).fetchone()[0]

    def outcome(self) -> str:
        rows = self.conn.execute("SELECT status, count(*) FROM transactions WHERE transaction_id LIKE %s "
                                 "GROUP BY status ORDER BY status", (f"{self.prefix}-%",)).fetchall()
        return ", ".join(f"{status} {count:,}" for status, count in rows)


def waiting(topic: str | None, group_id: str | None) -> bool:
    """Whether a stage has work: clear and settle when their topic has messages their group has not
    committed (their sensor would wait forever otherwise); produce always runs once."""
    return topic is None or group_backlog(topic, group_id, topology.KAFKA_CONN_ID) > 0


def drain_with_dags_test(api: AirflowApi, meter: CpuMeter | None = None
                         ) -> tuple[dict[str, list[dict]], dict[str, CpuUse]]:
    """Run produce once, then clear and settle until their topics are drained, one after the other;
    return each DAG's task summaries (XComs) and, with a `meter`, the CPU used while its runs ran."""
    summaries: dict[str, list[dict]] = {}
    cpu: dict[str, CpuUse] = {}
    for dag_id, task_id, counted, topic, group_id in STAGES:
        summaries[dag_id] = []
        start = meter.mark() if meter else None
        while waiting(topic, group_id):
            summary = api.xcom(dag_id, run_dag(dag_id), task_id)
            if summary and summary.get(counted):
                summaries[dag_id].append(summary)
            if topic is None:
                break
        if meter:
            cpu[dag_id] = meter.since(start)
    return summaries, cpu


class StageFigures(NamedTuple):
    """A stage's task runs, the transactions they counted, the seconds of their rates and their peak MB."""
    runs: int
    count: int
    seconds: float
    peak_mb: float

    @property
    def rate(self) -> float:
        return self.count / max(self.seconds, 1e-6)


def stage_figures(summaries: dict[str, list[dict]]) -> dict[str, StageFigures]:
    figures = {}
    for dag_id, _, counted, _, _ in STAGES:
        runs = summaries[dag_id]
        figures[dag_id] = StageFigures(len(runs), sum(s[counted] for s in runs), sum(s.get("seconds", 0) for s in runs),
                                       max((s["peak_memory_mb"] for s in runs), default=0))
    return figures


def tally_problems(summaries: dict[str, list[dict]], count: int) -> list[str]:
    """Where the stages' summed counts differ from what a load of `count` transactions taken once gives."""
    problems = []
    for dag_id, expected in STAGE_TALLIES.items():
        for keys, share in expected.items():
            total = sum(summary.get(key, 0) for summary in summaries[dag_id] for key in keys.split("+"))
            if total != share * count:
                problems.append(f"{dag_id} {keys} {total:,}, not {share * count:,}")
    return problems


def print_stage_table(title: str, summaries: dict[str, list[dict]], rates: bool = True) -> None:
    """One row per stage; `rates` only where the tasks drained a backlog (under a stream a task's time
    includes its waits for the next burst, so its rate says nothing)."""
    print(f"\n{title}")
    print(f"{'stage':<10}{'runs':>5}{'transactions':>14}" + (f"{'seconds':>10}{'tx/s':>10}" if rates else "")
          + f"{'peak MB':>10}")
    for dag_id, stage in stage_figures(summaries).items():
        print(f"{dag_id.removeprefix('ledgerflow_'):<10}{stage.runs:>5}{stage.count:>14,}"
              + (f"{stage.seconds:>10.1f}{stage.rate:>10,.0f}" if rates else "") + f"{stage.peak_mb:>10,.0f}")


def print_medians(title: str, figures: list[dict[str, StageFigures]]) -> None:
    """Each stage's median rate over repeated loads, with the range of its rates and of its peak memory: on a
    shared machine one run says little."""
    print(f"\n{title}")
    print(f"{'stage':<10}{'median tx/s':>13}{'range tx/s':>20}{'peak MB':>14}")
    for dag_id in DRIVEN_DAGS:
        rates = [run[dag_id].rate for run in figures]
        peaks = [run[dag_id].peak_mb for run in figures]
        print(f"{dag_id.removeprefix('ledgerflow_'):<10}{statistics.median(rates):>13,.0f}"
              f"{f'{min(rates):,.0f}–{max(rates):,.0f}':>20}{f'{min(peaks):,.0f}–{max(peaks):,.0f}':>14}")


def print_stage_cpu(summaries: dict[str, list[dict]], cpu: dict[str, CpuUse]) -> None:
    """Each stage's CPU per transaction, against what the machine's cores give a transaction at the rate the
    issue asks for. The task's own is its process's over the window its rate is measured in; that of the
    services it drives is theirs over all of the stage's `dags test` runs, Airflow's start-up and the idle end
    of a drain included (they do little then). Upkeep is PostgreSQL catching up on writes, this stage's and
    earlier ones' (the load's inserts before produce), so it varies from run to run."""
    print("\nCPU per transaction in µs: the task's process while its rate was measured; PostgreSQL's backends, its "
          "upkeep (autovacuum, WAL, checkpoints), Redis and Kafka while the stage's runs ran")
    for dag_id, _, counted, _, _ in STAGES:
        runs = summaries[dag_id]
        count = sum(s[counted] for s in runs)
        if not count:
            continue
        parts = {"task": sum(s.get("cpu_seconds", 0) for s in runs),
                 **{name: cpu[dag_id].seconds.get(name, 0.0)
                    for name in ("PostgreSQL", "PostgreSQL upkeep", "Redis", "Kafka")}}
        target, cores = TARGETS[dag_id], cpu[dag_id].cores
        print(f"{dag_id.removeprefix('ledgerflow_'):<10}{sum(parts.values()) / count * 1e6:>6,.0f} "
              f"({(sum(parts.values()) - parts['PostgreSQL upkeep']) / count * 1e6:,.0f} without upkeep) = "
              + " + ".join(f"{name} {seconds / count * 1e6:,.0f}" for name, seconds in parts.items())
              + f"; at {target:,} tx/s the {cores} cores give {cores / target * 1e6:,.0f}")


def with_dags(api: AirflowApi, unpaused: bool, body: Callable[[datetime | None], None]) -> None:
    """Run `body` with the pipeline's DAGs paused (or unpaused, passing it when), then put them back as they
    were."""
    before = {dag_id: api.is_paused(dag_id) for dag_id in PIPELINE_DAGS}  # stop_pipeline pauses them all
    api.stop_pipeline()
    drain_with_dags_test(api)
    try:
        unpaused_at = datetime.now(UTC) if unpaused else None
        if unpaused_at:
            for dag_id in DRIVEN_DAGS:
                api.set_paused(dag_id, False)
            wait_until_driven(api, unpaused_at)
        body(unpaused_at)
    finally:
        api.stop_pipeline()
        for dag_id, paused in before.items():
            api.set_paused(dag_id, paused)


def wait_until_driven(api: AirflowApi, since: datetime, timeout: float = 120) -> None:
    """Wait until the scheduler drives the DAGs as in operation: a produce run has ended since `since`, and
    clear and settle each have a run waiting for work. A load inserted right after unpausing measured the
    scheduler's start-up too: in two of seven end-to-end runs produce's first run started only after the
    last insert, and the run took half a minute longer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (any(run["state"] == "success" for run in api.runs_since(STAGES[0][0], since))
                and all(api.active_runs(dag_id) for dag_id in DRIVEN_DAGS[1:])):
            return
        time.sleep(1)
    raise TimeoutError(f"the scheduler did not run the pipeline's DAGs within {timeout:.0f} s of unpausing them")


def finish_running_tasks(api: AirflowApi, timeout: float = 120) -> None:
    """Pause the DAGs and give their running tasks time to end on their own (a drain ends once its topic
    has been idle for LEDGERFLOW_IDLE_TIMEOUT_SECONDS), so their summaries are there to read."""
    for dag_id in DRIVEN_DAGS:
        api.set_paused(dag_id, True)
    deadline = time.monotonic() + timeout
    while any(api.running_tasks(dag_id) for dag_id in DRIVEN_DAGS) and time.monotonic() < deadline:
        time.sleep(2)


def stages(api, conn, args) -> None:
    def body(_unpaused_at):
        loads = f"{args.count:,} transactions across {args.accounts:,} accounts" + (
            ", 10% from 5 hot accounts" if args.hot else "")
        figures = []
        for _ in range(args.repeat):
            load = Load(conn, args.count, args.accounts, args.hot)
            load.insert()
            with CpuMeter(os.environ["LEDGERFLOW_AIRFLOW_DB_NAME"]) as meter:
                summaries, cpu = drain_with_dags_test(api, meter)
            print_stage_table(f"stages: {loads} ({load.outcome()})", summaries)
            print_stage_cpu(summaries, cpu)
            if problems := tally_problems(summaries, args.count):
                raise SystemExit("the stages did not take the load once each, so their rates are not its: "
                                 + "; ".join(problems))
            load.wait_until_terminal(timeout=60)  # settle's runs have drained its topic: all are terminal
            figures.append(stage_figures(summaries))
        if args.repeat > 1:
            print_medians(f"stages, {args.repeat} runs of {loads}: each stage's median rate", figures)
    with_dags(api, unpaused=False, body=body)


def end_to_end(api, conn, args) -> None:
    def body(unpaused_at):
        load = Load(conn, args.count, args.accounts, args.hot)
        with CpuMeter(os.environ["LEDGERFLOW_AIRFLOW_DB_NAME"]) as meter:
            before_inserts = meter.mark()
            # One transaction: committed in chunks, the load reached the pipeline while it was inserted, and what
            # was done by the last insert counted in the rate without its time.
            last_insert = load.insert(all_at_once=True)
            after_insert = meter.mark()
            inserting = after_insert.at - before_inserts.at
            load.wait_until_terminal(args.timeout)
            cpu = meter.since(after_insert)
        seconds = load.last_terminal_at() - last_insert
        print(f"\nend to end with the scheduler: {args.count:,} transactions across {args.accounts:,} accounts "
              f"({load.outcome()})")
        print(f"the insert's commit to the last terminal status: {seconds:.1f} s, {args.count / seconds:,.0f} tx/s "
              f"(the insert took {inserting:.1f} s before that, in one transaction)")
        print(f"CPU from the insert's commit until all were seen terminal: "
              f"{cpu.per_transaction(args.count)}")
        finish_running_tasks(api)
        print_stage_table("the scheduler's task runs meanwhile", scheduled_summaries(api, unpaused_at), rates=False)
    with_dags(api, unpaused=True, body=body)


def latency(api, conn, args) -> None:
    def body(unpaused_at):
        count = int(args.rate * args.seconds)
        load = Load(conn, count, args.accounts, args.hot)
        started = time.time()
        # the rate the stream reached, not the one asked: paced inserts that fell behind catch up in bursts
        inserting = load.insert(args.rate) - started
        load.wait_until_terminal(args.timeout)
        seconds = sorted(load.latencies())
        percentiles = statistics.quantiles(seconds, n=100)
        p50, p95 = percentiles[49], percentiles[94]
        print(f"\nlatency: {count:,} transactions at {args.rate:,.0f}/s for {args.seconds:.0f} s "
              f"across {args.accounts:,} accounts ({load.outcome()}); inserted in {inserting:.1f} s, "
              f"{count / inserting:,.0f}/s")
        print(f"insert to terminal status: p50 {p50:.1f} s, p95 {p95:.1f} s, max {seconds[-1]:.1f} s")
        finish_running_tasks(api)
        print_stage_table("the scheduler's task runs meanwhile", scheduled_summaries(api, unpaused_at), rates=False)
    with_dags(api, unpaused=True, body=body)


def scheduled_summaries(api: AirflowApi, since: datetime) -> dict[str, list[dict]]:
    summaries = {}
    for dag_id, task_id, counted, _, _ in STAGES:
        values = (api.xcom(dag_id, run["dag_run_id"], task_id) for run in api.runs_since(dag_id, since))
        summaries[dag_id] = [v for v in values if v and v.get(counted)]
    return summaries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["stages", "end-to-end", "latency"])
    parser.add_argument("--count", type=int, help="transactions (stages: 100,000; end-to-end: 1,000,000)")
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--hot", action="store_true", help="10%% of the transfers from 5 hot accounts")
    parser.add_argument("--repeat", type=int, default=1, help="stages: loads one after the other, then medians")
    parser.add_argument("--rate", type=float, default=1000, help="latency: transactions per second")
    parser.add_argument("--seconds", type=float, default=180, help="latency: how long the stream runs")
    parser.add_argument("--timeout", type=float, default=1800, help="give up waiting after this many seconds")
    args = parser.parse_args()
    args.count = args.count or (1_000_000 if args.mode == "end-to-end" else 100_000)

    conn = PostgresHook(postgres_conn_id="ledgerflow_postgres").get_conn()
    conn.autocommit = True
    {"stages": stages, "end-to-end": end_to_end, "latency": latency}[args.mode](AirflowApi(), conn, args)


if __name__ == "__main__":
    main()
