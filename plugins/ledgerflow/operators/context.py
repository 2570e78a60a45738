"""What every ledgerflow operator needs from Airflow: the audit identity of the running task and a
database connection from the provider's hook."""

import gc
import re
import resource
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from airflow.providers.postgres.hooks.postgres import PostgresHook

from ledgerflow.core.audit import AuditContext


def audit_context(context) -> AuditContext:
    ti = context["ti"]
    return AuditContext(changed_by=f"airflow:{ti.dag_id}.{ti.task_id}", dag_id=ti.dag_id, run_id=ti.run_id,
                        task_id=ti.task_id, try_number=ti.try_number, map_index=ti.map_index)


def postgres_connection(postgres_conn_id: str, lock_timeout: float):
    """A psycopg 3 connection in autocommit mode (the ledger functions open their own transactions) whose
    statements wait at most `lock_timeout` seconds for a lock. Behind a session that holds the rows and
    hangs, the task fails (LockNotAvailable), visibly and to be retried, instead of running for ever while
    its DAG, one run at a time, stands still. The pipeline itself holds rows for about a minute at most:
    settle keeps a batch's transactions locked while it sends the batch's dead letters, a flush that gives
    up after 60 s."""
    conn = PostgresHook(postgres_conn_id=postgres_conn_id).get_conn()
    try:
        conn.autocommit = True
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{round(lock_timeout * 1000)}ms",))
    except BaseException:
        conn.close()
        raise
    return conn


def reset_peak_memory() -> None:
    """Start the process's peak resident memory (VmHWM) afresh from what it holds now, when a task starts. Under
    `airflow dags test` the task runs in the CLI's own process, whose peak so far is the CLI's start-up, the
    DAG's parsing and, for clear and settle, the sensor's run; and a process started by exec keeps the peak of
    the one that started it in `ru_maxrss`. Either would hide a task that grows below that mark. A diagnostic
    must not fail the task: where the kernel offers no reset, the figure stays the process's peak."""
    with suppress(OSError), open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def peak_memory_mb() -> float:
    """The task process's peak resident memory since reset_peak_memory, for the run summary (without /proc,
    the process's peak)."""
    try:
        with open("/proc/self/status") as status:
            return round(int(re.search(r"^VmHWM:\s+(\d+) kB$", status.read(), re.MULTILINE)[1]) / 1024, 1)
    except OSError:
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


@contextmanager
def batch_friendly_gc(young_generation: int = 100_000) -> Iterator[None]:
    """Garbage collection for a task that handles batches of 10,000 messages. A batch's objects
    (messages, rows, decisions) outlive many collections of the young generation, so they are walked
    again and again as they age, and each full collection walks everything the task process has loaded
    too: Airflow, SQLAlchemy, the providers. That was half of clear's Python time. What exists when the
    task starts is frozen (never collected, as it lives as long as the process) and the young generation
    is collected every `young_generation` allocations instead of 700. Reference counting still frees
    almost everything at once; only reference cycles wait longer. Both are undone at the end."""
    gc.collect()
    gc.freeze()
    threshold = gc.get_threshold()
    gc.set_threshold(young_generation, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


@contextmanager
def quick_thread_switches(interval: float = 0.0005) -> Iterator[None]:
    """A shorter switch interval for the interpreter lock. A task's thread waits on PostgreSQL several times
    a batch while its background thread runs Python; when a reply arrives, the waiting thread gets the
    lock back only when the other one yields it, after up to 5 ms by default. At 0.5 ms, clear and settle
    ran about 7% faster (two runs of each). Put back at the end."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(before)
