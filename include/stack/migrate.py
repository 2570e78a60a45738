"""Apply the schema migrations in sql/ (and, with --seed, the sample data) to the pipeline database.

Each NNNN_*.sql file runs once, in name order, in one transaction together with its row in
schema_migrations, so applying twice is a no-op and a failed migration leaves nothing half done.
A recorded file whose text changed since it was applied stops the run: migrations are history.
"""

import argparse
import hashlib
import sys
import time
from pathlib import Path

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
SAMPLE_DATA = SQL_DIR / "seed" / "sample_data.sql"

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    filename   text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(Exception):
    """A migration could not be applied; the message says why and what to do."""


def pending_migrations(applied: dict[str, str], sql_dir: Path = SQL_DIR) -> list[Path]:
    pending = []
    for path in sorted(sql_dir.glob("[0-9]*.sql")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        recorded = applied.get(path.name)
        if recorded is None:
            pending.append(path)
        elif recorded != digest:
            raise MigrationError(f"migration {path.name} was changed after it was applied; add a new migration instead")
    return pending


# Two runs at once (make run and make test in two terminals) would both find a migration pending and one would
# fail on its schema_migrations row after the other applied it: the second waits for the first, then finds
# nothing pending.
MIGRATIONS_LOCK = "SELECT pg_advisory_lock(hashtext('ledgerflow schema migrations'))"
MIGRATIONS_UNLOCK = "SELECT pg_advisory_unlock(hashtext('ledgerflow schema migrations'))"


# A migration's DDL waits for every transaction open on its tables, and while it waits every later statement on
# them queues behind it: on a live pipeline, one session left in a transaction (a psql that never committed) would
# stop every stage for as long as it stays. So each of a try's lock waits ends after LOCK_TIMEOUT: the try is
# rolled back, which lets the queue through, and after a pause the migration tries again. A deadlock with the
# pipeline (a migration that locks accounts before transactions, against its order) is tried again too.
LOCK_TIMEOUT_SECONDS = 2
LOCK_TRIES = 30
PAUSE_BETWEEN_TRIES_SECONDS = 1
TRIED_AGAIN = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)

# The sessions a migration that gave up may have waited for: in a transaction since before its first try.
TRANSACTIONS_OPEN_SINCE = """
SELECT pid, state, xact_start, regexp_replace(left(query, 80), '\\s+', ' ', 'g') FROM pg_stat_activity
 WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
   AND xact_start < %s
 ORDER BY xact_start"""


def migrate(conn, sql_dir: Path = SQL_DIR, lock_timeout: float = LOCK_TIMEOUT_SECONDS,
            tries: int = LOCK_TRIES) -> list[str]:
    conn.execute(MIGRATIONS_LOCK)
    try:
        return _apply_pending(conn, sql_dir, lock_timeout, tries)
    finally:
        conn.execute(MIGRATIONS_UNLOCK)


def _apply_pending(conn, sql_dir: Path, lock_timeout: float, tries: int) -> list[str]:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(CREATE_LEDGER)
        cur.execute("SELECT filename, sha256 FROM schema_migrations")
        applied = dict(cur.fetchall())
    names = []
    for path in pending_migrations(applied, sql_dir):
        first_try = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        for attempt in range(1, tries + 1):
            try:
                _apply(conn, path, lock_timeout)
                break
            except TRIED_AGAIN as error:
                if attempt == tries:
                    raise MigrationError(
                        f"migration {path.name} did not get its locks in {tries} tries ({type(error).__name__}); "
                        f"sessions in a transaction since before the first: "
                        f"{_transactions_open_since(conn, first_try) or 'none now'}. End them, or run again."
                    ) from error
                print(f"==> migration {path.name} did not get its locks ({type(error).__name__}); "
                      f"try {attempt + 1} of {tries} follows", file=sys.stderr)
                time.sleep(PAUSE_BETWEEN_TRIES_SECONDS)
        names.append(path.name)
    return names


def _apply(conn, path: Path, lock_timeout: float) -> None:
    with conn.transaction(), conn.cursor() as cur:  # one transaction per file
        # at least 1 ms: 0 would mean no limit at all
        cur.execute("SELECT set_config('lock_timeout', %s, true)", (f"{max(1, round(lock_timeout * 1000))}ms",))
        cur.execute(path.read_text())
        cur.execute("INSERT INTO schema_migrations (filename, sha256) VALUES (%s, %s)",
                    (path.name, hashlib.sha256(path.read_bytes()).hexdigest()))


def _transactions_open_since(conn, moment) -> str:
    return "; ".join(f"pid {pid} ({state} since {started:%H:%M:%S}: {query})"
                     for pid, state, started, query in conn.execute(TRANSACTIONS_OPEN_SINCE, (moment,)).fetchall())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-conn-id", default="ledgerflow_postgres")
    parser.add_argument("--seed", action="store_true", help="also load the sample data (rows that exist are kept)")
    args = parser.parse_args()
    conn = PostgresHook(postgres_conn_id=args.postgres_conn_id).get_conn()
    conn.autocommit = True  # every unit of work below is an explicit transaction block
    try:
        applied = migrate(conn)
        print("==> " + (f"applied migrations: {', '.join(applied)}" if applied else "schema is up to date"))
        if args.seed:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(SAMPLE_DATA.read_text())
    except MigrationError as error:
        sys.exit(f"error: {error}")
    finally:
        conn.close()


if __name__ == "__main__":
    main()
