"""Write the Redis records (settlement:{id}, rejected:{id}) again from PostgreSQL.

    include/stack/with-env python include/rewrite_records.py [--since '2026-11-27 04:00+00'] [--margin 900]

settle writes a transaction's record once the ledger has committed its settlement or rejection, and commits its
offsets once Redis has replied; Redis keeps its records in an append-only file synced once a second. So a machine
that crashed can come back without the last second's records, and nothing would write them again: a re-drive
skips what is settled or rejected. Nor does any stage publish a rejection made by hand. This writes the records
of the transactions settled or rejected since a moment (all, by default) as settle would, from the ledger; it is
safe while the pipeline runs, as both write what the ledger holds.

A settlement's status time is when its batch was locked, and its records reach Redis after it commits: usually
within seconds, but a settlement may wait for the transactions' and the accounts' locks (up to 120 s each), for
the dead letters' flush (up to 60 s) and for the batch before. So a record written just before a crash can have a
status time minutes before it, and `--since` (the crash) goes back `--margin` seconds more; writing a record again
is harmless, so the default errs long.
"""

import argparse
from datetime import datetime, timedelta

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.redis.hooks.redis import RedisHook

from ledgerflow import topology
from ledgerflow.store.redis_projection import rewrite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--since", type=datetime.fromisoformat,
                        help="the moment Redis may have lost records from, such as a crash (ISO 8601, with offset)")
    parser.add_argument("--margin", type=float, default=900,
                        help="seconds before --since from which settled or rejected transactions are rewritten")
    args = parser.parse_args()
    if args.since is not None and args.since.tzinfo is None:
        parser.error("--since needs a UTC offset, such as 2026-11-27T04:00+00:00")
    conn = PostgresHook(postgres_conn_id=topology.POSTGRES_CONN_ID).get_conn()
    conn.autocommit = True
    try:
        since = args.since and args.since - timedelta(seconds=args.margin)
        written = rewrite(conn, RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn(), since)
    finally:
        conn.close()
    print(f"wrote {written:,} records from the ledger")


if __name__ == "__main__":
    main()
