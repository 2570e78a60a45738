"""produce_window: re-drive an hour of transactions that are not terminal yet, for backfills.

    airflow backfill create --dag-id ledgerflow_produce_window --reprocess-behavior completed --max-active-runs 1 \\
        --from-date 2026-11-24T00:00:00+00:00 --to-date 2026-11-24T23:00:00+00:00

runs each hour of 24 November: 24 runs (both dates name the start of an hour, and both are included), one at a
time in order. `--max-active-runs 1` matters: a backfill runs up to 10 at once whatever the DAG's max_active_runs,
and hours re-driven at once interleave their messages, so that clear could let a later transfer from an account
take funds before an earlier one.
Each run re-drives the hour that starts at its logical date, whoever made the run. (Airflow gives a run
triggered with a logical date the interval that ends there; that run is the one a backfill of the same date
would run again, so it too takes the hour that starts there.)
`--reprocess-behavior completed` runs again an hour that has run before (by an earlier backfill, or on
schedule while unpaused); without it, Airflow skips such an hour and reports nothing. Each run publishes
its hour's pending, cleared and cleared-with-conditions transactions again, published before or not (after
an outage, a lost topic, a restored backup). clear and settle treat a transaction that already moved on as
a duplicate: they republish or rewrite what the ledger records and settle nothing twice. A backfill's runs
start only while this DAG is unpaused (`airflow dags unpause ledgerflow_produce_window`); left unpaused, it
also re-drives the hour before every hour, as a safety net.
"""

from datetime import timedelta

from airflow.sdk import DAG, CronDataIntervalTimetable

from ledgerflow import topology
from ledgerflow.operators.produce import ProduceTransactionsOperator

with DAG(
    dag_id="ledgerflow_produce_window",
    # A data-interval timetable: each run covers [start, end) of its hour (a plain "@hourly" cron
    # trigger would give zero-length intervals).
    schedule=CronDataIntervalTimetable("@hourly", timezone="UTC"),
    start_date=topology.WINDOW_DAG_START,  # catchup=False: unpausing schedules only the latest hour
    catchup=False,
    max_active_runs=1,
    # whatever dags_are_paused_at_creation says: it re-drives only when asked, or as a safety net once unpaused
    is_paused_upon_creation=True,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=10)},
    tags=["ledgerflow"],
    doc_md=__doc__,
):
    ProduceTransactionsOperator(
        task_id="redrive_window",
        topic=topology.TRANSACTIONS_TOPIC,
        # The hour from the run's logical date: a scheduled or backfill run's data interval. A run triggered
        # without a logical date (the trigger's default) has none: it re-drives the hour before the trigger.
        window_start="{{ logical_date if logical_date is defined "
                     "else dag_run.run_after - macros.timedelta(hours=1) }}",
        window_end="{{ logical_date + macros.timedelta(hours=1) if logical_date is defined "
                   "else dag_run.run_after }}",
        redrive=True,
        postgres_conn_id=topology.POSTGRES_CONN_ID,
        kafka_config_id=topology.KAFKA_CONN_ID,
    )
