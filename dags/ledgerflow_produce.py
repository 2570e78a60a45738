"""produce: every few seconds, publish new pending transactions to Kafka, enriched and risk-scored.

The interval (LEDGERFLOW_PRODUCE_INTERVAL_SECONDS, default 5) bounds how long a new transaction waits
before it is published; each run takes everything pending and unpublished created before its
interval's end, so a skipped or failed run loses nothing. A backfill of it would be thousands of runs that re-drive
nothing (each takes only what was never published), so Airflow refuses one: ledgerflow_produce_window
re-drives.
"""

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from ledgerflow import topology
from ledgerflow.operators.produce import ProduceTransactionsOperator

with DAG(
    dag_id="ledgerflow_produce",
    schedule=timedelta(seconds=int(os.environ.get("LEDGERFLOW_PRODUCE_INTERVAL_SECONDS", "5"))),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    allowed_run_types=["scheduled", "manual"],
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    tags=["ledgerflow"],
    doc_md=__doc__,
):
    ProduceTransactionsOperator(
        task_id="publish_new_transactions",
        topic=topology.TRANSACTIONS_TOPIC,
        postgres_conn_id=topology.POSTGRES_CONN_ID,
        kafka_config_id=topology.KAFKA_CONN_ID,
    )
