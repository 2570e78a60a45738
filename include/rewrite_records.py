"""Write the Redis records (settlement:{id}, rejected:{id}) again from PostgreSQL.

    include/stack/with-env python include/rewrite_records.py [--since '2026-11-27 04:00+00'] [--margin 900]

settle writes a transaction's record once the ledger has committed its settlement or rejection, and commits its
offsets once Redis has replied; Redis syncs its append-only file before it replies. A Redis whose file was lost,
or that ran with a laxer sync (once a second, Redis's default) through a crash of the machine, can come back
without records, and nothing would write them again: a re-drive skips what is settled or rejected. Nor does any
stage publish a rejection made by hand. This writes the records
of the transactions settled or rejected since a moment (all, by default) as settle would, from the ledger; it is
safe while the pipeline runs, as both write what the ledger holds.

A settlement's status time is when its batch was locked, and its records reach Redis after it commits: usually
within seconds, but a settlement may wait for the transactions' and the accounts' locks (up to 120 s each), for
the dead letters' flush (up to 60 s) and for the batch before. So a record written just before a crash can have a
status time minutes before it, and `--since` (the crash) goes back `--margin` seconds more; writing a record again
is harmless, so the default errs long.
"""

import argparse
import sys
from datetime import datetime, timedelta

import psycopg
import redis
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.redis.hooks.redis import RedisHook

from ledgerflow import topology
from ledgerflow.store.redis_projection import rewrite


# A record reaches Redis minutes at most after its status time (above): a margin of more than a day is a mistake,
# and records from further back want an earlier --since
MAX_MARGIN_SECONDS = 86_400


def margin_seconds(text: str) -> float:
    """--margin: seconds from 0 to a day. A negative margin would start after --since and skip the records between."""
    try:
        if 0 <= (value := float(text)) <= MAX_MARGIN_SECONDS:  # NaN compares false, so it is refused too
            return value
    except ValueError:  # not a number
        pass
    raise argparse.ArgumentTypeError(f"{text} is not a number of seconds from 0 to {MAX_MARGIN_SECONDS:,} (a day); "
                                     f"for records from further back, give an earlier --since")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--since", type=datetime.fromisoformat,
                        help="the moment Redis may have lost records from, such as a crash (ISO 8601, with offset)")
    parser.add_argument("--margin", type=margin_seconds, default=900,
                        help="seconds before --since from which settled or rejected transactions are rewritten "
                             "(at most a day)")
    return parser


def parse_arguments(argv: list[str] | None = None) -> datetime | None:
    """The moment to rewrite the records from, --margin before --since; None, without --since, for all of them."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.since is None:
        return None
    if args.since.tzinfo is None:
        parser.error("--since needs a UTC offset, such as 2026-11-27T04:00+00:00")
    try:
        return args.since - timedelta(seconds=args.margin)
    except OverflowError:  # a --since within a day of the year 1
        parser.error(f"--since {args.since.isoformat()} less --margin {args.margin:g} s is before the year 1")


def failure_message(error: psycopg.OperationalError | redis.exceptions.ConnectionError) -> str:
    """One line instead of a traceback: the server, what failed (the client's first line, which names the address
    it could not connect to) and what to look at."""
    server = "PostgreSQL" if isinstance(error, psycopg.OperationalError) else "Redis"
    return f"{server}: {(str(error).splitlines() or [type(error).__name__])[0].rstrip('.')}: is the stack up? (make status)"


def rewrite_since(since: datetime | None) -> int:
    conn = PostgresHook(postgres_conn_id=topology.POSTGRES_CONN_ID).get_conn()
    conn.autocommit = True
    try:
        return rewrite(conn, RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn(), since)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    since = parse_arguments(argv)
    try:
        written = rewrite_since(since)
    except (psycopg.OperationalError, redis.exceptions.ConnectionError) as error:
        print(failure_message(error), file=sys.stderr)
        return 1
    print(f"wrote {written:,} records from the ledger")
    return 0


if __name__ == "__main__":
    sys.exit(main())
