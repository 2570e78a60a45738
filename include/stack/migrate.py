"""Apply the schema migrations in sql/ (and, with --seed, the sample data) to the pipeline database.

Each NNNN_*.sql file runs once, in name order, in one transaction together with its row in
schema_migrations, so applying twice is a no-op and a failed migration leaves nothing half done.
A recorded file whose text changed since it was applied stops the run: migrations are history.
"""

import argparse
import hashlib
import sys
from pathlib import Path

from airflow.providers.postgres.hooks.postgres import PostgresHook

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
SAMPLE_DATA = SQL_DIR / "seed" / "sample_data.sql"

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    filename   text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def pending_migrations(applied: dict[str, str]) -> list[Path]:
    pending = []
    for path in sorted(SQL_DIR.glob("[0-9]*.sql")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        recorded = applied.get(path.name)
        if recorded is None:
            pending.append(path)
        elif recorded != digest:
            sys.exit(f"error: migration {path.name} was changed after it was applied; add a new migration instead")
    return pending


# Two runs at once (make run and make test in two terminals) would both find a migration pending and one would
# fail on its schema_migrations row after the other applied it: the second waits for the first, then finds
# nothing pending.
MIGRATIONS_LOCK = "SELECT pg_advisory_lock(hashtext('ledgerflow schema migrations'))"
MIGRATIONS_UNLOCK = "SELECT pg_advisory_unlock(hashtext('ledgerflow schema migrations'))"


def migrate(conn) -> list[str]:
    conn.execute(MIGRATIONS_LOCK)
    try:
        return _apply_pending(conn)
    finally:
        conn.execute(MIGRATIONS_UNLOCK)


def _apply_pending(conn) -> list[str]:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(CREATE_LEDGER)
        cur.execute("SELECT filename, sha256 FROM schema_migrations")
        applied = dict(cur.fetchall())
    names = []
    for path in pending_migrations(applied):
        with conn.transaction(), conn.cursor() as cur:  # one transaction per file
            cur.execute(path.read_text())
            cur.execute("INSERT INTO schema_migrations (filename, sha256) VALUES (%s, %s)",
                        (path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
        names.append(path.name)
    return names


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
    finally:
        conn.close()


if __name__ == "__main__":
    main()
