"""End-to-end fixtures: run DAGs with `airflow dags test`, rewind consumer groups, read Kafka and Redis.

The running scheduler would race these tests for the same consumer groups, so the session starts by
pausing the pipeline's DAGs and failing their active runs (tests/conftest.py; `make run` unpauses them again).
"""

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
from airflow.providers.redis.hooks.redis import RedisHook
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition

from include.airflow_control import AirflowApi
from ledgerflow import topology
from ledgerflow.store.kafka import LedgerflowConsumerHook


@pytest.fixture(scope="session")
def airflow_api():
    return AirflowApi()


@pytest.fixture(scope="session", autouse=True)
def _pipeline_paused(pipeline_paused):
    pass


def watermarks(topic: str) -> dict[int, int]:
    consumer = LedgerflowConsumerHook([topic], "ledgerflow-tests", topology.KAFKA_CONN_ID).get_conn
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in partitions}
    finally:
        consumer.close()


def messages_from(topic: str, offsets: dict[int, int]) -> list:
    """The messages of `topic` from `offsets` (partition: offset) to its end, read without a consumer group."""
    end = watermarks(topic)
    consumer = LedgerflowConsumerHook([topic], "ledgerflow-tests", topology.KAFKA_CONN_ID).get_conn
    try:
        consumer.assign([TopicPartition(topic, p, o) for p, o in offsets.items() if o < end[p]])
        messages = []
        while len(messages) < sum(end[p] - o for p, o in offsets.items()):
            message = consumer.poll(10)
            assert message is not None, f"{topic} ended before its high watermarks {end}"
            if message.error() is None:
                messages.append(message)
        return messages
    finally:
        consumer.close()


def rewind(group_id: str, topic: str, offsets: dict[int, int]) -> None:
    """Set a consumer group's committed offsets back, so its next run receives those messages again."""
    admin = KafkaAdminClientHook(kafka_config_id=topology.KAFKA_CONN_ID).get_conn
    request = ConsumerGroupTopicPartitions(group_id, [TopicPartition(topic, p, o) for p, o in offsets.items()])
    for future in admin.alter_consumer_group_offsets([request]).values():
        future.result()


@pytest.fixture(scope="session")
def redis_client():
    return RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()


class Scenario:
    """The original system's sample data under a unique prefix: 4 customers, 6 accounts, 3 transfers,
    plus one transfer its source cannot cover."""

    CUSTOMERS = {"C1": "LOW", "C2": "MEDIUM", "C3": "HIGH", "C4": "LOW"}
    ACCOUNTS = {"A1": ("C1", "CHECKING", "50000.00"), "A2": ("C2", "SAVINGS", "25000.00"),
                "A3": ("C3", "CHECKING", "75000.00"), "A4": ("C4", "SAVINGS", "30000.00"),
                "A5": ("C1", "SAVINGS", "100000.00"), "A6": ("C2", "CHECKING", "15000.00")}
    TRANSFERS = {"T1": ("A1", "A2", "1000.00"), "T2": ("A3", "A4", "2500.50"), "T3": ("A5", "A6", "750.25"),
                 "T4": ("A6", "A1", "20000.00")}
    # once T1 to T3 are settled (T2 cleared with conditions: its source is HIGH risk) and T4 rejected for funds
    SETTLED_STATUSES = {"T1": "settled", "T2": "settled", "T3": "settled", "T4": "rejected"}
    SETTLED_BALANCES = {"A1": Decimal("49000.00"), "A2": Decimal("26000.00"), "A3": Decimal("72499.50"),
                        "A4": Decimal("32500.50"), "A5": Decimal("99249.75"), "A6": Decimal("15750.25")}
    SETTLED_AUDIT_CHAINS = {
        "T1": [("pending", "cleared", "CLEARED"), ("cleared", "settled", "SETTLED")],
        "T2": [("pending", "cleared_with_conditions", "CLEARED_WITH_CONDITIONS"),
               ("cleared_with_conditions", "settled", "SETTLED")],
        "T3": [("pending", "cleared", "CLEARED"), ("cleared", "settled", "SETTLED")],
        "T4": [("pending", "rejected", "INSUFFICIENT_FUNDS")]}

    def __init__(self, conn):
        self.conn = conn
        self.prefix = f"E{uuid.uuid4().hex[:8]}"
        self.created_at = datetime.now(UTC)

    def id(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def create(self, transfers=None) -> None:
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany("INSERT INTO customers (customer_id, name, risk_level) VALUES (%s, %s, %s)",
                               [(self.id(c), f"Customer {c}", risk) for c, risk in self.CUSTOMERS.items()])
            cursor.executemany(
                "INSERT INTO accounts (account_number, customer_id, account_type, balance) VALUES (%s, %s, %s, %s)",
                [(self.id(a), self.id(c), kind, Decimal(b)) for a, (c, kind, b) in self.ACCOUNTS.items()])
            self.insert_transfers(cursor, transfers or self.TRANSFERS)

    def insert_transfers(self, cursor, transfers) -> None:
        cursor.executemany(
            "INSERT INTO transactions (transaction_id, amount, from_account, to_account, transaction_type, description) "
            "VALUES (%s, %s, %s, %s, 'TRANSFER', 'end-to-end test')",
            [(self.id(t), Decimal(amount), self.id(a), self.id(b)) for t, (a, b, amount) in transfers.items()])

    def statuses(self) -> dict[str, str]:
        rows = self.conn.execute("SELECT transaction_id, status FROM transactions WHERE transaction_id LIKE %s",
                                 (f"{self.prefix}-%",)).fetchall()
        return {transaction_id.removeprefix(f"{self.prefix}-"): status for transaction_id, status in rows}

    def balances(self) -> dict[str, Decimal]:
        rows = self.conn.execute("SELECT account_number, balance FROM accounts WHERE account_number LIKE %s",
                                 (f"{self.prefix}-%",)).fetchall()
        return {number.removeprefix(f"{self.prefix}-"): balance for number, balance in rows}

    def audit_chain(self, transfer: str) -> list[tuple[str | None, str, str | None]]:
        return self.conn.execute("SELECT old_status, new_status, reason_code FROM transaction_audit "
                                 "WHERE transaction_id = %s ORDER BY id", (self.id(transfer),)).fetchall()

    def ledger_snapshot(self) -> dict:
        like = (f"{self.prefix}-%",)
        return {
            "statuses": self.statuses(), "balances": self.balances(),
            "audit": self.conn.execute("SELECT transaction_id, old_status, new_status, reason_code, changed_at "
                                       "FROM transaction_audit WHERE transaction_id LIKE %s ORDER BY id", like).fetchall(),
            "postings": self.conn.execute("SELECT transaction_id, account_number, direction, amount, balance_after "
                                          "FROM journal_postings WHERE transaction_id LIKE %s ORDER BY id", like).fetchall(),
        }

    def reconciliation_gaps(self) -> list:
        return self.conn.execute("""
            SELECT a.account_number FROM accounts a LEFT JOIN journal_postings p USING (account_number)
             WHERE a.account_number LIKE %s GROUP BY a.account_number, a.balance, a.opening_balance
            HAVING a.balance <> a.opening_balance
                   + coalesce(sum(CASE p.direction WHEN 'CREDIT' THEN p.amount ELSE -p.amount END), 0)""",
                                 (f"{self.prefix}-%",)).fetchall()
