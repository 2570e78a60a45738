"""Re-drive every hour that holds a transaction waiting for a re-drive, or waiting for clear or settle longer than
it should: one run of ledgerflow_produce_window per such hour, as a backfill of that hour would make.

    include/stack/with-env python -m include.redrive_waiting [--older-than 10] [--from-hour H] [--to-hour H]
        [--dry-run]   (make redrive)

After a lost or restored topic, a broker's unclean crash or an approved review, transactions wait in
transactions_waiting (`make waiting`). A backfill re-drives a span of hours, every hour in it, and one
transaction stuck for weeks would make that thousands of runs; this runs only the hours that hold one.
A run re-drives what its hour holds that is not terminal; clear and settle take what moved on meanwhile as
duplicates, so nothing settles twice. The hours run one after the other, in order, each once the one before has
ended: hours re-driven at once would interleave their messages, and clear could let a later transfer from an
account take funds before an earlier one (Airflow would also start an hour that has run before, cleared, ahead
of a new one). The window DAG must be unpaused for its runs to start, and clear and settle
for the transactions to move on.
"""

import argparse
import sys
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook

from include.airflow_control import AirflowApi, api_failure_message
from ledgerflow import topology

WINDOW_DAG = "ledgerflow_produce_window"
HOUR = timedelta(hours=1)

# The hours (UTC, as the window DAG's are) of what waits for a re-drive, or for clear or settle since longer than
# the given minutes; waiting for produce or for a review is waiting for someone else.
WAITING_HOURS = """
SELECT date_trunc('hour', created_at, 'UTC') AS hour, count(*) FROM transactions_waiting
 WHERE (waits_for = 'window re-drive'
        OR (waits_for IN ('clear', 'settle') AND since < now() - make_interval(mins => %(older_than)s)))
   AND created_at >= coalesce(%(from_hour)s::timestamptz, '-infinity')
   AND created_at < coalesce(%(to_hour)s::timestamptz + interval '1 hour', 'infinity')
 GROUP BY 1 ORDER BY 1"""


def hours_the_window_dag_can_run(hours: list[datetime], now: datetime
                                 ) -> tuple[list[datetime], list[datetime], list[datetime]]:
    """The hours a window run can re-drive now; those before the DAG's start date, for which Airflow makes no task
    (their runs would succeed having re-driven nothing, and their transactions would wait on); and those not over
    yet. A run of an hour not over would take its logical date: Airflow keeps one run per logical date, so the
    scheduler would then skip that hour's own run, the safety net for what is lost after the run."""
    return ([hour for hour in hours if topology.WINDOW_DAG_START <= hour and hour + HOUR <= now],
            [hour for hour in hours if hour < topology.WINDOW_DAG_START],
            [hour for hour in hours if hour + HOUR > now])


def start_of_an_hour(text: str) -> datetime:
    """The start of an hour, in ISO 8601 with its offset, as the window DAG's logical dates are."""
    value = datetime.fromisoformat(text)
    # in UTC, as the window DAG's hours are: 09:00+05:30 is 03:30 there
    if value.tzinfo is None or (value.astimezone(UTC).minute, value.second, value.microsecond) != (0, 0, 0):
        raise argparse.ArgumentTypeError(f"{text} is not the start of an hour with its offset, such as "
                                         f"2026-11-24T09:00:00+00:00")
    return value


# make_interval, in WAITING_HOURS, takes its minutes as a PostgreSQL integer
MAX_OLDER_THAN_MINUTES = 2**31 - 1


def minutes_waited(text: str) -> int:
    """--older-than: whole minutes, at least 1; 0 or less would re-drive the hours of everything waiting for clear or
    settle, which those stages are taking up."""
    try:
        if 1 <= (value := int(text)) <= MAX_OLDER_THAN_MINUTES:
            return value
    except ValueError:  # not a whole number
        pass
    raise argparse.ArgumentTypeError(f"{text} is not a whole number of minutes from 1 to {MAX_OLDER_THAN_MINUTES:,}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--older-than", type=minutes_waited, default=10,
                        help="minutes a transaction may wait for clear or settle before its hour is re-driven")
    parser.add_argument("--from-hour", type=start_of_an_hour, help="only this hour and those after it")
    parser.add_argument("--to-hour", type=start_of_an_hour, help="only this hour and those before it")
    parser.add_argument("--dry-run", action="store_true", help="list the hours, run nothing")
    return parser


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    # bounds the wrong way round select nothing, which would read as nothing waiting
    if args.from_hour and args.to_hour and args.from_hour > args.to_hour:
        parser.error(f"--from-hour {args.from_hour.isoformat()} is after --to-hour {args.to_hour.isoformat()}")
    return args


def failure_message(error: psycopg.OperationalError | httpx.HTTPError) -> str | None:
    """One line instead of a traceback for PostgreSQL or Airflow's api-server failing; None for an error of the API
    whose traceback tells more."""
    if isinstance(error, psycopg.OperationalError):  # its first line names the address it could not connect to
        return f"PostgreSQL: {(str(error).splitlines() or [type(error).__name__])[0]}: is the stack up? (make status)"
    return api_failure_message(error)


def not_tried(hours: list[datetime]) -> str:
    """The hours after a run left going, which were not re-driven: a span's can be thousands, so the first and last."""
    if not hours:
        return "it was the last hour to re-drive"
    if len(hours) == 1:
        return f"the hour after it, {hours[0].isoformat()}, was not tried"
    return f"the {len(hours):,} hours after it, {hours[0].isoformat()} to {hours[-1].isoformat()}, were not tried"


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        return redrive(args)
    except (psycopg.OperationalError, httpx.HTTPError) as error:
        if (message := failure_message(error)) is None:
            raise
        print(message, file=sys.stderr)
        return 1


def redrive(args: argparse.Namespace) -> int:
    conn = PostgresHook(postgres_conn_id=topology.POSTGRES_CONN_ID).get_conn()
    try:
        hours = conn.execute(WAITING_HOURS, {"older_than": args.older_than, "from_hour": args.from_hour,
                                             "to_hour": args.to_hour}).fetchall()
    finally:
        conn.close()
    if not hours:
        print("nothing waits for a re-drive")
        return 0
    to_redrive, too_early, not_over = hours_the_window_dag_can_run([hour for hour, _ in hours], datetime.now(UTC))
    for hour, count in hours:
        print(f"{hour.isoformat()}  {count:,} waiting" + (
            "  (before the window DAG's start: skipped)" if hour in too_early else
            f"  (not over: its own run re-drives it after {(hour + HOUR).isoformat()})" if hour in not_over else ""))
    if too_early:
        print(f"{WINDOW_DAG} starts at {topology.WINDOW_DAG_START.isoformat()}, and no run of it can re-drive an "
              f"hour before that ({len(too_early)} listed): move its start date (topology.WINDOW_DAG_START) before "
              f"{too_early[0].isoformat()} to re-drive them", file=sys.stderr)
    if args.dry_run:
        return 0
    if not to_redrive and not not_over:
        return 1
    api = AirflowApi()
    if api.is_paused(WINDOW_DAG):  # an hour not over needs its own run as much
        print(f"{WINDOW_DAG} is paused, so its runs would not start: "
              f"include/stack/with-env airflow dags unpause {WINDOW_DAG}", file=sys.stderr)
        return 1
    for number, hour in enumerate(to_redrive):
        run_id = api.run_again(WINDOW_DAG, hour)
        print(f"{hour.isoformat()}  run {run_id}", end=" ", flush=True)
        try:
            state = api.finished_state(WINDOW_DAG, run_id)
        except (TimeoutError, httpx.HTTPError) as error:
            print("unfinished", flush=True)  # ends the run's line before any message
            if (reason := str(error) if isinstance(error, TimeoutError) else failure_message(error)) is None:
                raise
            print(f"{reason}; run {run_id} left going: {not_tried(to_redrive[number + 1:])} (follow it in the Airflow "
                  f"UI; once it has ended, make redrive again)", file=sys.stderr)
            return 1
        print(state)
        if state != "success":
            print(f"{WINDOW_DAG} run {run_id} {state}: the hours after it are not re-driven (see its log in the "
                  f"Airflow UI, then make redrive again)", file=sys.stderr)
            return 1
    print("make waiting shows what still waits")
    return 1 if too_early else 0


if __name__ == "__main__":
    sys.exit(main())
