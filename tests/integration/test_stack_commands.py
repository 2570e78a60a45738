"""The local stack's commands are idempotent and fail clearly."""

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from contextlib import ExitStack, closing, contextmanager, suppress
from datetime import timedelta

import psycopg
import pytest
import redis
from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
from airflow.providers.postgres.hooks.postgres import PostgresHook
from confluent_kafka import KafkaException
from psycopg import sql

from include.airflow_control import group_of, parent_of
from include.bench.fault_drill import scheduler_pid
from include.stack.migrate import MIGRATIONS_LOCK, MIGRATIONS_UNLOCK, MigrationError, migrate
from ledgerflow import topology
from ledgerflow.store.kafka import (LedgerflowConsumerHook, LedgerflowProducerHook, commit, consume_batches,
                                    group_backlog, publish)
from tests.conftest import REPO_ROOT, open_pg
from tests.integration.conftest import a_session_waits_for

STACK = str(REPO_ROOT / "include" / "stack" / "stack.sh")
VENV_PYTHON = os.path.join(os.environ["LEDGERFLOW_VENV"], "bin", "python")


def run_stack(*args, env=None):
    return subprocess.run([STACK, *args], env=env or os.environ, capture_output=True, text=True, timeout=600)


def count(sql):
    return PostgresHook(postgres_conn_id="ledgerflow_postgres").get_first(sql)[0]


def test_a_second_migration_run_waits_for_the_first_and_then_finds_nothing_to_do():
    """While one run holds the migrations' lock (as it does while it applies them), another waits for it."""
    holder = open_pg()
    second = None
    try:
        holder.execute(MIGRATIONS_LOCK)
        second = subprocess.Popen([STACK, "migrate"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert a_session_waits_for(holder, seconds=60), f"it did not wait: {second.poll()}"
        holder.execute(MIGRATIONS_UNLOCK)
        stdout, stderr = second.communicate(timeout=120)
    finally:
        if second and second.poll() is None:
            second.kill()
        holder.close()

    assert second.returncode == 0, stderr
    assert "schema is up to date" in stdout


@contextmanager
def a_schema_with_a_table_and_a_migration_of_it(tmp_path):
    """A schema of its own (dropped on exit) with a table `t`, a connection whose search path is that schema (so
    migrate keeps its schema_migrations there), and a directory holding one migration that alters `t`."""
    schema = f"migration_lock_{uuid.uuid4().hex[:8]}"
    conn = open_pg()
    try:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.t (id int)")
        conn.execute(f"SET search_path TO {schema}")
        (tmp_path / "0001_alter_t.sql").write_text("ALTER TABLE t ADD COLUMN added int")
        yield schema, conn, tmp_path
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@contextmanager
def a_migration_waiting_behind(table: str, conn, sql_dir, lock_timeout: float):
    """A session holding `table` in a transaction, and migrate (on `conn`, in a thread) waiting for it; yields that
    session and the list migrate's result goes into. On exit the session commits and the migration is waited for."""
    holder = open_pg()
    applied = []
    try:
        holder.execute("BEGIN")
        holder.execute(f"SELECT FROM {table}")
        migrating = threading.Thread(target=lambda: applied.append(migrate(conn, sql_dir, lock_timeout=lock_timeout)))
        migrating.start()
        assert a_session_waits_for(holder, seconds=30)
        yield holder, applied
        holder.execute("COMMIT")
        migrating.join(timeout=60)
    finally:
        holder.close()


def test_a_migration_waiting_for_a_lock_lets_the_statements_behind_it_through_then_applies(tmp_path):
    """A session holds the table the migration alters. Without a lock timeout the migration would wait for it in the
    lock queue, and a read of the table would queue behind the migration until that session ends (the read's
    statement timeout fails it). With it, the read goes through between the migration's tries, and the migration is
    applied once the session ends."""
    with a_schema_with_a_table_and_a_migration_of_it(tmp_path) as (schema, conn, sql_dir):
        with a_migration_waiting_behind(f"{schema}.t", conn, sql_dir, lock_timeout=0.5) as (_, applied):
            with closing(open_pg()) as reader:
                reader.execute("SET statement_timeout = '10s'")
                assert reader.execute(f"SELECT count(*) FROM {schema}.t").fetchone() == (0,)

        assert applied == [["0001_alter_t.sql"]]
        assert conn.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
                            "AND table_name = 't' AND column_name = 'added'", (schema,)).fetchone() == (1,)


def test_a_migration_in_a_deadlock_is_tried_again_and_applied(tmp_path):
    """The migration locks t and then waits for u, which a session holds; that session then asks for t, within the
    1 s after which the migration's wait is checked for a deadlock. The check fails the migration's try, and the next
    try applies it."""
    with a_schema_with_a_table_and_a_migration_of_it(tmp_path) as (schema, conn, sql_dir):
        conn.execute(f"CREATE TABLE {schema}.u (id int)")
        (sql_dir / "0001_alter_t.sql").write_text("LOCK TABLE t IN ACCESS EXCLUSIVE MODE; "
                                                  "LOCK TABLE u IN ACCESS EXCLUSIVE MODE; "
                                                  "ALTER TABLE t ADD COLUMN added int")
        with a_migration_waiting_behind(f"{schema}.u", conn, sql_dir, lock_timeout=10) as (holder, applied):
            holder.execute(f"SELECT FROM {schema}.t")  # waits for the migration until its try is failed

        assert applied == [["0001_alter_t.sql"]]


def test_a_migration_changed_after_it_was_applied_stops_the_run(tmp_path):
    with a_schema_with_a_table_and_a_migration_of_it(tmp_path) as (_, conn, sql_dir):
        assert migrate(conn, sql_dir) == ["0001_alter_t.sql"]
        (sql_dir / "0001_alter_t.sql").write_text("ALTER TABLE t ADD COLUMN added bigint")
        (sql_dir / "0002_next.sql").write_text("ALTER TABLE t ADD COLUMN next int")

        with pytest.raises(MigrationError, match="0001_alter_t.sql was changed after it was applied"):
            migrate(conn, sql_dir)

        assert conn.execute("SELECT filename FROM schema_migrations").fetchall() == [("0001_alter_t.sql",)]


def test_a_migration_that_never_gets_its_lock_gives_up_and_names_the_session_holding_it(tmp_path):
    with a_schema_with_a_table_and_a_migration_of_it(tmp_path) as (schema, conn, sql_dir):
        holder = open_pg()
        try:
            holder.execute("BEGIN")
            holder.execute(f"SELECT FROM {schema}.t")
            conn.execute("SET statement_timeout = '30s'")  # a migration that waits for good fails the test
            with pytest.raises(MigrationError, match=f"0001_alter_t.sql did not get its locks in 2 tries "
                                                     f"\\(LockNotAvailable\\).*pid {holder.info.backend_pid} "
                                                     f"\\(idle in transaction since [0-9:]+: SELECT FROM {schema}.t\\)"):
                migrate(conn, sql_dir, lock_timeout=0.2, tries=2)
        finally:
            holder.close()

        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


def test_applying_the_migrations_again_is_a_no_op():
    applied_before = count("SELECT count(*) FROM schema_migrations")

    result = run_stack("migrate")

    assert result.returncode == 0, result.stderr
    assert "schema is up to date" in result.stdout
    assert count("SELECT count(*) FROM schema_migrations") == applied_before


def test_make_waiting_counts_the_transactions_not_yet_terminal_by_what_they_wait_for(ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    ledger.transactions((source, destination, "1.00"))  # not yet published
    [cleared] = ledger.transactions((source, destination, "1.00"), status="cleared")
    ledger.conn.execute("UPDATE transactions SET published_at = now() WHERE transaction_id = %s", (cleared,))
    in_view = dict(ledger.conn.execute("SELECT (waits_for, status)::text, count(*) FROM transactions_waiting "
                                       "GROUP BY waits_for, status").fetchall())

    result = subprocess.run(["make", "-s", "waiting"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    lines = [[column.strip() for column in line.split("|")] for line in result.stdout.splitlines()]
    assert lines[0] == ["waits_for", "status", "transactions", "oldest_since", "oldest_for"]
    counts = {(row[0], row[1]): int(row[2]) for row in lines[2:] if len(row) == 5}
    assert counts[("produce", "pending")] == in_view["(produce,pending)"] >= 1
    assert counts[("settle", "cleared")] == in_view["(settle,cleared)"] >= 1


def test_make_redrive_skips_hours_before_the_window_dags_start_which_no_run_can_re_drive_and_says_so(ledger):
    """Airflow makes no task for a logical date before a DAG's start date: a run of such an hour succeeded having
    re-driven nothing, and its transaction waited on while make redrive reported success."""
    source, destination = ledger.accounts("100.00", "0.00")
    [waiting] = ledger.transactions((source, destination, "1.00"), status="cleared")  # unpublished: a re-drive's
    hour = topology.WINDOW_DAG_START - timedelta(days=200 + uuid.uuid4().int % 1000, hours=3)
    ledger.conn.execute("UPDATE transactions SET created_at = %s WHERE transaction_id = %s",
                        (hour + timedelta(minutes=20), waiting))
    try:
        result = subprocess.run(["make", "-s", "redrive", f"REDRIVE_ARGS=--from-hour {hour.isoformat()} "
                                 f"--to-hour {hour.isoformat()} --dry-run"],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    finally:  # make test shares make run's database: a plain make redrive there would warn of it for good
        ledger.move_by_hand([waiting], "rejected")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{hour.isoformat()}  1 waiting  (before the window DAG's start: skipped)"]
    assert ("ledgerflow_produce_window starts at 2000-01-01T00:00:00+00:00, and no run of it can re-drive an hour "
            "before that (1 listed)") in result.stderr


def test_bringing_the_services_up_again_keeps_their_data():
    accounts_before = count("SELECT count(*) FROM accounts")
    transactions_before = count("SELECT count(*) FROM transactions")

    result = run_stack("up", "--no-airflow")

    assert result.returncode == 0, result.stdout + result.stderr
    assert count("SELECT count(*) FROM accounts") == accounts_before
    assert count("SELECT count(*) FROM transactions") == transactions_before
    assert [line.split()[:2] for line in result.stdout.splitlines() if line.startswith(("postgres", "redis", "kafka"))] == [
        ["postgres", "up"], ["redis", "up"], ["kafka", "up"]]


def test_a_port_taken_by_another_process_stops_the_start_with_the_setting_to_change(tmp_path):
    # A second stack in its own state directory finds PostgreSQL's port held by the running one.
    env = {**os.environ, "LEDGERFLOW_STATE": str(tmp_path / "state")}

    result = run_stack("up", "--no-airflow", env=env)

    assert result.returncode != 0
    assert f"port {os.environ['LEDGERFLOW_PG_PORT']} (for postgres) is taken" in result.stderr
    assert "LEDGERFLOW_PG_PORT=<port>" in result.stderr
    assert not (tmp_path / "state").exists(), "nothing is installed or started before the ports are checked"


@pytest.mark.parametrize(("setting", "program"), [("LEDGERFLOW_WORKER_LOG_PORT", "airflow-scheduler"),
                                                  ("LEDGERFLOW_TRIGGER_LOG_PORT", "airflow-triggerer")])
def test_a_log_server_port_taken_by_another_process_stops_the_start_with_the_setting_to_change(
        tmp_path, setting, program):
    """A second stack whose other ports are free finds a log server's port held by the running stack's (the UI
    reads running tasks' logs from them, so a stack without one would show none)."""
    free = iter(free_ports(7))
    moved = ["LEDGERFLOW_PG_PORT", "LEDGERFLOW_REDIS_PORT", "LEDGERFLOW_KAFKA_PORT", "LEDGERFLOW_KAFKA_CONTROLLER_PORT",
             "LEDGERFLOW_AIRFLOW_PORT", "LEDGERFLOW_WORKER_LOG_PORT", "LEDGERFLOW_TRIGGER_LOG_PORT"]
    env = {**os.environ, **{name: str(next(free)) for name in moved if name != setting},
           "LEDGERFLOW_STATE": str(tmp_path / "state")}

    result = run_stack("up", env=env)

    assert result.returncode != 0
    assert f"port {os.environ[setting]} (for {program}) is taken" in result.stderr
    assert f"{setting}=<port>" in result.stderr
    assert not (tmp_path / "state").exists(), "nothing is installed or started before the ports are checked"


@pytest.mark.parametrize("command", ["install", "up", "down", "status", "migrate", "pipeline", "reset", "leftovers"])
def test_a_stack_command_run_by_another_user_says_it_needs_root_before_it_does_anything(command):
    # the script on stdin: a checkout under /root is not readable by nobody
    with open(STACK) as script:
        result = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "bash", "-s",
                                 command], stdin=script, capture_output=True, text=True, timeout=60)

    assert result.returncode == 1
    assert result.stderr == f"error: stack.sh {command} needs root: the stack is installed and run as root (try sudo)\n"


@pytest.mark.parametrize("args", [[], ["--help"], ["stop"]])
def test_a_stack_command_it_does_not_know_gets_the_usage_before_anything_else(tmp_path, args):
    result = subprocess.run([STACK, *args], env={**os.environ, "LEDGERFLOW_STATE": str(tmp_path / "state")},
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stdout.startswith("The local stack without Docker: installs and runs PostgreSQL, Redis, Kafka")
    assert "stack.sh up [--no-airflow]" in result.stdout
    assert not (tmp_path / "state").exists()


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, as the kernel hands them out."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for each in sockets:
            each.bind(("127.0.0.1", 0))
        return [each.getsockname()[1] for each in sockets]
    finally:
        for each in sockets:
            each.close()


def test_reset_starts_the_pipeline_data_over_and_leaves_everything_else_alone():
    """reset drops what the pipeline holds: here a database, a topic and a Redis database of the test's own,
    named by the stack's settings, so the development stack's own data is what must stay."""
    suffix = uuid.uuid4().hex[:8]
    database, topic, group = f"ledgerflow_reset_{suffix}", f"reset-{suffix}", f"reset-{suffix}"
    env = {**os.environ, "LEDGERFLOW_DB_NAME": database, "LEDGERFLOW_TOPICS": topic, "LEDGERFLOW_REDIS_DB": "15"}
    records = redis.Redis(port=int(os.environ["LEDGERFLOW_REDIS_PORT"]),
                          password=os.environ["LEDGERFLOW_REDIS_PASSWORD"], db=15)
    pipeline_records = redis.Redis(port=int(os.environ["LEDGERFLOW_REDIS_PORT"]),
                                   password=os.environ["LEDGERFLOW_REDIS_PASSWORD"])
    canary = f"reset-test-canary:{suffix}"
    pipeline_records.set(canary, "stays")
    pipeline_accounts = count("SELECT count(*) FROM accounts")
    try:
        first = run_stack("reset", env=env)  # the database does not exist yet: reset makes it
        assert first.returncode == 0, first.stdout + first.stderr
        with psycopg.connect(os.environ["AIRFLOW_CONN_LEDGERFLOW_POSTGRES"], dbname=database, autocommit=True) as conn:
            seeded = conn.execute("SELECT count(*) FROM accounts").fetchone()[0], \
                conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
            source, destination = (row[0] for row in conn.execute(
                "SELECT account_number FROM accounts ORDER BY account_number LIMIT 2").fetchall())
            conn.execute("INSERT INTO transactions (transaction_id, amount, from_account, to_account) "
                         "VALUES ('reset-me', 1.00, %s, %s)", (source, destination))
        records.hset("settlement:reset-me", "status", "settled")
        producer = LedgerflowProducerHook(kafka_config_id=topology.KAFKA_CONN_ID).get_producer()
        publish(producer, topic, [(None, b"one"), (None, b"two"), (None, b"three")])
        consumer = LedgerflowConsumerHook([topic], group, topology.KAFKA_CONN_ID).get_consumer()
        commit(consumer, [m for batch in consume_batches(consumer, 10, time_budget=30, idle_timeout=1) for m in batch])
        consumer.close()
        assert group_backlog(topic, group, topology.KAFKA_CONN_ID) == 0

        again = run_stack("reset", env=env)

        assert again.returncode == 0, again.stdout + again.stderr
        with psycopg.connect(os.environ["AIRFLOW_CONN_LEDGERFLOW_POSTGRES"], dbname=database, autocommit=True) as conn:
            assert (conn.execute("SELECT count(*) FROM accounts").fetchone()[0],
                    conn.execute("SELECT count(*) FROM transactions").fetchone()[0]) == seeded
        assert records.dbsize() == 0
        assert group_backlog(topic, f"{group}-new", topology.KAFKA_CONN_ID) == 0, "the topic is empty"
        publish(producer, topic, [(None, b"after the reset")])
        assert group_backlog(topic, group, topology.KAFKA_CONN_ID) == 1, "the topic is new, the group's offsets gone"
        assert pipeline_records.get(canary) == b"stays"
        assert count("SELECT count(*) FROM accounts") == pipeline_accounts
    finally:
        pipeline_records.delete(canary)
        records.flushdb()
        with psycopg.connect(os.environ["AIRFLOW_CONN_LEDGERFLOW_POSTGRES"], autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        with suppress(KafkaException):  # the topic is missing if the first reset failed; that failure is the one to see
            KafkaAdminClientHook(kafka_config_id=topology.KAFKA_CONN_ID).delete_topic([topic])


def processes_in_group(group: int) -> dict[int, bytes]:
    """Process id to command line of the processes in process group `group`."""
    processes = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and group_of(int(entry)) == group:
            with suppress(OSError):
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    processes[int(entry)] = cmdline.read()
    return processes


def until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.2)
    return result


@contextmanager
def started_in_a_group_of_its_own(script: str, *, leader_stays: bool = False):
    """Runs bash `script` as the leader of a new process group; the leader exits (and is reaped) once the script
    echoed a pid, unless `leader_stays`. Yields the group and that pid; ends what is left of the group after."""
    leader = subprocess.Popen(["bash", "-c", script], start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        pid = int(leader.stdout.readline())
        if not leader_stays:
            leader.wait()
        yield leader.pid, pid
    finally:
        end_group(leader.pid)
        leader.wait()


def end_group(group: int) -> None:
    if processes_in_group(group):  # else its id may be another group's by now
        with suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and parent_of(int(entry)) == pid]


def has_title(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().startswith(b"airflow ")
    except OSError:  # ended meanwhile
        return False


TITLED = "import setproctitle, time; setproctitle.setproctitle('airflow test-leftover'); time.sleep(300)"
IN_BACKGROUND = "</dev/null >/dev/null 2>&1 & echo $!"


def test_leftovers_ends_only_groups_of_airflow_processes_on_this_virtualenv_whose_leader_is_gone():
    # as an executor's worker does, the orphan started a task, whose process leads a group of its own
    with_a_task = ("import os, setproctitle, time; task = os.fork() == 0; task and os.setpgid(0, 0); "
                   "setproctitle.setproctitle('airflow test-leftover' + (' task' if task else '')); time.sleep(300)")
    with ExitStack() as stack:
        orphan_group, orphan = stack.enter_context(
            started_in_a_group_of_its_own(f'"{VENV_PYTHON}" -c "{with_a_task}" {IN_BACKGROUND}'))
        [task] = until(lambda: children_of(orphan), 30, "the orphan started its task")
        stack.callback(end_group, task)
        until(lambda: group_of(task) == task, 30, "the task leads a group of its own")
        live_group, with_leader = stack.enter_context(
            started_in_a_group_of_its_own(f'"{VENV_PYTHON}" -c "{TITLED}" {IN_BACKGROUND}; wait', leader_stays=True))
        elsewhere_group, elsewhere = stack.enter_context(
            started_in_a_group_of_its_own(f'(exec -a "airflow test-leftover elsewhere" sleep 300) {IN_BACKGROUND}'))
        for pid in orphan, with_leader:
            until(lambda: has_title(pid), 30, "the Python process took its title")

        result = run_stack("leftovers")

        assert result.returncode == 0, result.stdout + result.stderr
        assert f"process group {orphan_group}: airflow test-leftover" in result.stdout
        until(lambda: group_of(orphan) is None, 10, "the leftover ended")
        until(lambda: group_of(task) is None, 10, "the leftover's task ended")
        assert group_of(with_leader) == live_group, "a group whose leader lives is not a leftover"
        assert group_of(elsewhere) == elsewhere_group, "a process not on this virtualenv is not the stack's"


def test_a_scheduler_killed_outright_is_started_again_without_what_it_left():
    killed = until(scheduler_pid, 60, "the scheduler runs")
    left = processes_in_group(killed)
    assert any(title.startswith(b"airflow serve-logs") for title in left.values()), left
    assert len(left) > 2, "the executor's workers and the log server share the scheduler's group"
    with started_in_a_group_of_its_own(f'"{VENV_PYTHON}" -c "{TITLED}" {IN_BACKGROUND}') as (other_group, other):
        until(lambda: has_title(other), 30, "the Python process took its title")

        os.kill(killed, signal.SIGKILL)

        restarted = until(lambda: (pid := scheduler_pid()) not in (None, killed) and pid, 60,
                          "supervisord restarts it")
        until(lambda: any(title.startswith(b"airflow serve-logs")
                          for title in processes_in_group(restarted).values()),
              60, "the new scheduler's log server runs (the port is free for it)")
        assert processes_in_group(killed) == {}
        assert group_of(other) == other_group, "the restart ends the scheduler's leftovers, not all that look alike"
