"""settle: wait in the triggerer for clearance outcomes, then settle them atomically and project to Redis.

Continuous with one active run, like clear: a run waits (deferred) until cleared-transactions has
messages for the ledgerflow-settle group, then drains them batch by batch, through pauses shorter than
LEDGERFLOW_IDLE_TIMEOUT_SECONDS.
"""

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from ledgerflow import topology
from ledgerflow.operators.settle import SettleTransactionsOperator
from ledgerflow.sensors.backlog import KafkaBacklogSensor

with DAG(
    dag_id="ledgerflow_settle",
    schedule="@continuous",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    tags=["ledgerflow"],
    doc_md=__doc__,
):
    wait = KafkaBacklogSensor(
        task_id="wait_for_cleared_transactions",
        topic=topology.CLEARED_TOPIC,
        group_id=topology.SETTLE_GROUP,
        kafka_config_id=topology.KAFKA_CONN_ID,
    )
    settle = SettleTransactionsOperator(
        task_id="settle_transactions",
        topic=topology.CLEARED_TOPIC,
        group_id=topology.SETTLE_GROUP,
        dead_letter_topic=topology.CLEARED_DEAD_LETTER_TOPIC,
        kafka_config_id=topology.KAFKA_CONN_ID,
        postgres_conn_id=topology.POSTGRES_CONN_ID,
        idle_timeout=float(os.environ.get("LEDGERFLOW_IDLE_TIMEOUT_SECONDS", "30")),
        redis_conn_id=topology.REDIS_CONN_ID,
    )
    wait >> settle
