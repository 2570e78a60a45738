"""clear: wait in the triggerer for published transactions, then validate, decide and publish outcomes.

Continuous with one active run: a run waits (deferred, no worker slot) until the topic has messages for
the ledgerflow-clear group, then drains the backlog batch by batch; the next run starts as soon as it
ends, so runs come back-to-back while there is work. A run keeps consuming through pauses in the stream
shorter than LEDGERFLOW_IDLE_TIMEOUT_SECONDS (default 30; produce publishes every few seconds), so a
steady stream is served by one task run instead of a new run, sensor and task start-up per burst.
"""

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from ledgerflow import topology
from ledgerflow.operators.clear import ClearTransactionsOperator
from ledgerflow.sensors.backlog import KafkaBacklogSensor

with DAG(
    dag_id="ledgerflow_clear",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    tags=["ledgerflow"],
    doc_md=__doc__,
):
    wait = KafkaBacklogSensor(
        task_id="wait_for_transactions",
        topic=topology.TRANSACTIONS_TOPIC,
        group_id=topology.CLEAR_GROUP,
        kafka_config_id=topology.KAFKA_CONN_ID,
    )
    clear = ClearTransactionsOperator(
        task_id="clear_transactions",
        topic=topology.TRANSACTIONS_TOPIC,
        group_id=topology.CLEAR_GROUP,
        outcome_topic=topology.CLEARED_TOPIC,
        dead_letter_topic=topology.TRANSACTIONS_DEAD_LETTER_TOPIC,
        kafka_config_id=topology.KAFKA_CONN_ID,
        postgres_conn_id=topology.POSTGRES_CONN_ID,
        idle_timeout=float(os.environ.get("LEDGERFLOW_IDLE_TIMEOUT_SECONDS", "30")),
    )
    wait >> clear
