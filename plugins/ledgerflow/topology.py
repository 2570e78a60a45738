"""Names the DAGs, operators and tests share: topics, consumer groups, connection ids, the window DAG's start.

The local stack creates the topics listed in LEDGERFLOW_TOPICS (include/stack/settings.sh); a test
checks that every topic named here is among them (tests/test_dag_integrity.py).
"""

from datetime import UTC, datetime

TRANSACTIONS_TOPIC = "financial-transactions"
CLEARED_TOPIC = "cleared-transactions"
TRANSACTIONS_DEAD_LETTER_TOPIC = "financial-transactions.dlq"
CLEARED_DEAD_LETTER_TOPIC = "cleared-transactions.dlq"

CLEAR_GROUP = "ledgerflow-clear"
SETTLE_GROUP = "ledgerflow-settle"

POSTGRES_CONN_ID = "ledgerflow_postgres"
KAFKA_CONN_ID = "ledgerflow_kafka"
REDIS_CONN_ID = "ledgerflow_redis"

# Far back, so that an adopter's older transactions can be re-driven: Airflow makes no task for a logical date
# before a DAG's start date, so a window run of an earlier hour succeeds having re-driven nothing.
WINDOW_DAG_START = datetime(2000, 1, 1, tzinfo=UTC)
