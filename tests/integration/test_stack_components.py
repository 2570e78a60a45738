"""Each component of the local stack answers through its Airflow provider hook."""

import os
import subprocess
import uuid
from decimal import Decimal

from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.redis.hooks.redis import RedisHook

PIPELINE_TOPICS = {"financial-transactions", "cleared-transactions", "financial-transactions.dlq",
                   "cleared-transactions.dlq"}


def test_kafka_admin_hook_lists_the_pipeline_topics_with_the_configured_partitions():
    metadata = KafkaAdminClientHook(kafka_config_id="ledgerflow_kafka").get_conn.list_topics(timeout=10)

    assert PIPELINE_TOPICS <= set(metadata.topics), f"topics on the broker: {sorted(metadata.topics)}"
    expected_partitions = int(os.environ["LEDGERFLOW_TOPIC_PARTITIONS"])
    for topic in PIPELINE_TOPICS:
        assert len(metadata.topics[topic].partitions) == expected_partitions, topic


def test_postgres_hook_reads_the_sample_accounts_as_exact_decimals():
    rows = PostgresHook(postgres_conn_id="ledgerflow_postgres").get_records(
        "SELECT account_number, customer_id, account_type, opening_balance FROM accounts "
        "WHERE account_number LIKE 'ACC00_' ORDER BY account_number"
    )

    assert [row[0] for row in rows] == ["ACC001", "ACC002", "ACC003", "ACC004", "ACC005", "ACC006"]
    assert all(isinstance(row[3], Decimal) for row in rows)
    assert rows[0][1:] == ("CUST001", "CHECKING", Decimal("50000.00"))


def test_redis_hook_writes_and_reads_a_key():
    client = RedisHook(redis_conn_id="ledgerflow_redis").get_conn()
    key = f"ledgerflow-test:{uuid.uuid4()}"
    try:
        client.set(key, "1500.00", ex=60)
        assert client.get(key) == b"1500.00"
    finally:
        client.delete(key)


def test_redis_syncs_its_append_only_file_before_it_replies():
    """settle commits a batch's offsets once Redis has replied to its records: a sync once a second would leave a
    crash of the machine a second of records that nothing writes again."""
    client = RedisHook(redis_conn_id="ledgerflow_redis").get_conn()
    assert {**client.config_get("appendonly"), **client.config_get("appendfsync")} == {
        "appendonly": "yes", "appendfsync": "always"}


def test_the_original_readme_insert_through_psql_creates_a_pending_transaction():
    transaction_id = f"TEST-{uuid.uuid4().hex[:12]}"
    insert = (
        "INSERT INTO transactions (transaction_id, amount, from_account, to_account, transaction_type, description) "
        f"VALUES ('{transaction_id}', 1500.00, 'ACC001', 'ACC002', 'TRANSFER', 'Test transaction');"
    )
    env = {**os.environ, "PGPASSWORD": os.environ["LEDGERFLOW_DB_PASSWORD"]}
    psql = ["psql", "-h", "127.0.0.1", "-p", os.environ["LEDGERFLOW_PG_PORT"], "-U", os.environ["LEDGERFLOW_DB_USER"],
            "-d", os.environ["LEDGERFLOW_DB_NAME"], "-v", "ON_ERROR_STOP=1"]
    hook = PostgresHook(postgres_conn_id="ledgerflow_postgres")
    try:
        subprocess.run([*psql, "-c", insert], env=env, check=True, capture_output=True, text=True)
        assert hook.get_first("SELECT status, amount FROM transactions WHERE transaction_id = %s",
                              parameters=(transaction_id,)) == ("pending", Decimal("1500.00"))
    finally:
        hook.run("DELETE FROM transactions WHERE transaction_id = %s", parameters=(transaction_id,))
