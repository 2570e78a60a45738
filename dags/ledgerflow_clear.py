"""clear: wait in the triggerer for published transactions, then validate, decide and publish outcomes.

Continuous with one active run: a run waits (deferred, no worker slot) until the topic has messages for
the ledgerflow-clear group, then drains the backlog batch by batch; the next run starts as soon as it
ends, so runs come back-to-back while there is work.
"""

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
    )
    wait >> clear
