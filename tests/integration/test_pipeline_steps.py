"""The pipeline's Kafka-facing steps against the real broker, PostgreSQL and Redis, on topics of their own:
what produce publishes, the backlog the sensor waits on, the drain loop, failed deliveries, and bad messages
on their way to the dead-letter topic while the rest of the batch goes on."""

import ast
import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import hiredis
import psycopg
import pytest
import redis
from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook
from airflow.providers.redis.hooks.redis import RedisHook
from confluent_kafka import TopicPartition
from psycopg.pq import TransactionStatus

from ledgerflow import topology
from ledgerflow.core.audit import AuditContext
from ledgerflow.core.config import load_rules
from ledgerflow.core.messages import (ClearedV1, Customer, TransactionV1, decode_cleared, decode_transaction,
                                      encode)
from ledgerflow.core.reasons import ReasonCode
from ledgerflow.core.settlement import Settled
from ledgerflow.core.states import Status
from ledgerflow.operators.batches import KafkaBatchOperator
from ledgerflow.operators.settle import SettleTransactionsOperator
from ledgerflow.pipeline import BatchResult
from ledgerflow.pipeline.clear import clear_batch
from ledgerflow.pipeline import produce as produce_module
from ledgerflow.pipeline.produce import produce_window, to_message
from ledgerflow.pipeline.settle import settle_batch
from ledgerflow.store.kafka import (DeliveryFailed, LedgerflowConsumerHook, LedgerflowProducerHook, backlog, commit,
                                    consume_batches, group_backlog, publish)
from ledgerflow.store.ledger import settle
from ledgerflow.store import redis_projection
from ledgerflow.store.redis_projection import project, rewrite
from ledgerflow.triggers import backlog as backlog_trigger_module
from ledgerflow.triggers.backlog import KafkaBacklogTrigger
from tests.conftest import REPO_ROOT, open_pg

CONTEXT = AuditContext(changed_by="tests", dag_id="tests", run_id="test_pipeline_steps", task_id="step",
                       try_number=1, map_index=-1)


@contextmanager
def fresh_topics(*roles: str, partitions: int = 1):
    """A test's own topics, by role, deleted afterwards."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    names = {role: f"{prefix}-{role}" for role in roles}
    admin = KafkaAdminClientHook(kafka_config_id=topology.KAFKA_CONN_ID)
    admin.create_topic([(name, partitions, 1) for name in names.values()])
    yield names
    admin.delete_topic(list(names.values()))


@pytest.fixture
def topics():
    """Three fresh topics (input, outcome, dead letters), deleted afterwards."""
    with fresh_topics("in", "out", "dlq") as names:
        yield names


@pytest.fixture
def producer():
    producer = LedgerflowProducerHook(kafka_config_id=topology.KAFKA_CONN_ID).get_producer()
    yield producer
    producer.flush(10)


def consumer_of(topic: str, group_id: str | None = None):
    return LedgerflowConsumerHook([topic], group_id or f"test-{uuid.uuid4().hex[:8]}",
                                  topology.KAFKA_CONN_ID).get_consumer()


def read_all(topic: str, expected: int) -> list:
    consumer = consumer_of(topic)
    try:
        messages = [m for batch in consume_batches(consumer, 1000, time_budget=30, idle_timeout=1) for m in batch]
    finally:
        consumer.close()
    assert len(messages) == expected, f"{topic}: {[m.value() for m in messages]}"
    return messages


def clear_batch_of(ledger, producer, topics, messages, recording_conn=None):
    """clear_batch on the test's topics, with the rules and audit context of these tests, recording on
    `recording_conn` (by default the ledger's own connection)."""
    return clear_batch(ledger.conn, producer, messages, load_rules(), CONTEXT, topics["out"], topics["dlq"],
                       recording_conn=recording_conn or ledger.conn)


def transaction_message(ledger, transaction_id: str, amount: str, from_account: str, to_account: str) -> bytes:
    customer = Customer(ledger.customer, "Test Customer", "LOW")
    return encode(TransactionV1(
        transaction_id=transaction_id, amount=Decimal(amount), from_account=from_account, to_account=to_account,
        transaction_type="TRANSFER", description=None, created_at=datetime.now(UTC), from_customer=customer,
        to_customer=customer, from_account_type="CHECKING", to_account_type="CHECKING",
        from_balance=Decimal("0.00"), to_balance=Decimal("0.00"), risk_score=0))


def cleared_message(ledger, transaction_id: str, amount: str, from_account: str, to_account: str,
                    status: Status = Status.CLEARED, reason_code: ReasonCode = ReasonCode.CLEARED) -> bytes:
    customer = Customer(ledger.customer, "Test Customer", "LOW")
    return encode(ClearedV1(
        transaction_id=transaction_id, status=status, reason_code=reason_code, reason="",
        amount=Decimal(amount), from_account=from_account, to_account=to_account, risk_score=0,
        from_customer=customer, to_customer=customer, available_balance=None, cleared_at=datetime.now(UTC)))


def test_produce_publishes_a_window_in_creation_order_each_message_enriched_with_both_parties(topics, producer,
                                                                                              ledger, request):
    prefix = ledger.prefix
    ledger.conn.execute("INSERT INTO customers (customer_id, name, risk_level) VALUES (%s, 'Alice', 'HIGH'), "
                        "(%s, 'Bob', 'LOW')", (f"{prefix}-alice", f"{prefix}-bob"))
    alice, bob = f"{prefix}-savings", f"{prefix}-checking"
    ledger.conn.execute("INSERT INTO accounts (account_number, customer_id, account_type, balance) VALUES "
                        "(%s, %s, 'SAVINGS', 500.00), (%s, %s, 'CHECKING', 20.00)",
                        (alice, f"{prefix}-alice", bob, f"{prefix}-bob"))
    # A window of its own, in the past, so no other transaction is in it; two rows created at the same
    # moment go out in the order they were inserted.
    start = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(minutes=uuid.uuid4().int % 500_000)
    rows = [(f"{prefix}-late", "10.00", alice, bob, start + timedelta(seconds=2)),
            (f"{prefix}-first", "5.00", bob, alice, start + timedelta(seconds=1)),
            (f"{prefix}-second", "7000.00", alice, bob, start + timedelta(seconds=1))]
    with ledger.conn.cursor() as cursor:
        cursor.executemany("INSERT INTO transactions (transaction_id, amount, from_account, to_account, created_at) "
                           "VALUES (%s, %s, %s, %s, %s)", rows)
    # Published to a scratch topic that no clear reads, in an hour no window run takes: declined by hand afterwards,
    # passed or failed, so that they do not wait in `make waiting` of the database `make run` shares for ever.
    request.addfinalizer(lambda: ledger.move_by_hand([r[0] for r in rows], "rejected"))
    rules = load_rules()
    reader, *writers = open_pg(), open_pg(), open_pg()
    try:
        result = produce_window(reader, writers, producer, topics["in"], rules, start=start,
                                end=start + timedelta(minutes=1), redrive=True, batch_size=2)
    finally:
        for conn in (reader, *writers):
            conn.close()

    assert (result.published, result.batches) == (3, 2)
    received = read_all(topics["in"], 3)
    messages = [decode_transaction(m.value()) for m in received]
    assert [m.transaction_id for m in messages] == [f"{prefix}-first", f"{prefix}-second", f"{prefix}-late"]
    assert [m.key() for m in received] == [bob.encode(), alice.encode(), alice.encode()]
    second = messages[1]
    assert (second.from_customer, second.to_customer) == (Customer(f"{prefix}-alice", "Alice", "HIGH"),
                                                          Customer(f"{prefix}-bob", "Bob", "LOW"))
    assert (second.from_account_type, second.to_account_type, second.from_balance, second.to_balance) == (
        "SAVINGS", "CHECKING", Decimal("500.00"), Decimal("20.00"))
    assert second.risk_score == 55  # 15 for an amount over 5,000.00, 40 for the riskier party, HIGH
    assert messages[0].from_customer == Customer(f"{prefix}-bob", "Bob", "LOW")
    published = ledger.conn.execute("SELECT count(*) FROM transactions WHERE transaction_id = ANY(%s) "
                                    "AND published_at IS NOT NULL", ([r[0] for r in rows],)).fetchone()[0]
    assert published == 3


def test_a_batch_the_broker_does_not_acknowledge_stops_produce_before_anything_is_recorded(topics, producer, ledger,
                                                                                           monkeypatch):
    """Batches are published in one thread and recorded in another; a batch that is not acknowledged is not
    recorded, and neither are the batches after it, which are not published either (to a topic that would take
    them)."""
    source, destination = ledger.accounts("1000.00", "0.00")
    ids = ledger.transactions(*[(source, destination, "1.00")] * 3)
    hook = LedgerflowProducerHook(kafka_config_id=topology.KAFKA_CONN_ID)
    impatient = hook._get_client({**hook._build_config(), "message.timeout.ms": 1500})
    missing_topic = f"test-{uuid.uuid4().hex[:8]}-does-not-exist"  # auto-creation is off
    publishes = 0

    def the_first_to_a_missing_topic(_producer, _topic, records, *args, **kwargs):
        nonlocal publishes
        publishes += 1
        if publishes == 1:
            return publish(impatient, missing_topic, records, *args, **kwargs)
        return publish(producer, topics["in"], records, *args, **kwargs)

    monkeypatch.setattr(produce_module, "publish", the_first_to_a_missing_topic)
    created = ledger.conn.execute("SELECT min(created_at), max(created_at) FROM transactions "
                                  "WHERE transaction_id = ANY(%s)", (ids,)).fetchone()
    reader, writer = open_pg(), open_pg()
    try:
        with pytest.raises(DeliveryFailed, match=f"of 1 messages to {missing_topic} failed"):
            produce_window(reader, [writer], producer, topics["in"], load_rules(), start=created[0],
                           end=created[1] + timedelta(microseconds=1), redrive=True, batch_size=1)
    finally:
        reader.close()
        writer.close()
        impatient.purge()

    assert publishes == 1, "the batches after the one that failed are not published"
    read_all(topics["in"], 0)
    assert published(ledger, ids) == []


def four_new_transfers(ledger) -> tuple[list[str], datetime, datetime]:
    """Four new transfers between two new accounts, and the window [start, end) that holds exactly them."""
    source, destination = ledger.accounts("1000.00", "0.00")
    ids = ledger.transactions(*[(source, destination, "1.00")] * 4)
    first, last = ledger.conn.execute("SELECT min(created_at), max(created_at) FROM transactions "
                                      "WHERE transaction_id = ANY(%s)", (ids,)).fetchone()
    return ids, first, last + timedelta(microseconds=1)


def published(ledger, ids) -> list[str]:
    """Those of the transactions that are recorded as published, in stream order."""
    return [i for i, in ledger.conn.execute("SELECT transaction_id FROM transactions WHERE transaction_id = ANY(%s) "
                                            "AND published_at IS NOT NULL ORDER BY created_at, id", (ids,))]


def test_a_batch_recorded_in_parts_is_recorded_by_each_part_and_fails_if_a_part_fails(topics, producer, ledger):
    """Each writer records its part of a batch in a database transaction of its own: a part that fails fails
    the run, once the other parts are done, and its transactions stay unpublished, to go out again."""
    ids, start, end = four_new_transfers(ledger)
    reader, first, second = open_pg(), open_pg(), open_pg()
    second.close()
    try:
        with pytest.raises(psycopg.OperationalError):
            produce_window(reader, [first, second], producer, topics["in"], load_rules(), start=start, end=end,
                           redrive=True, batch_size=4)
        assert first.info.transaction_status == TransactionStatus.IDLE
    finally:
        reader.close()
        first.close()

    assert len(read_all(topics["in"], 4)) == 4
    assert published(ledger, ids) == ids[:2], "the first writer's part, the first half in stream order"


def test_a_batch_whose_parts_all_fail_to_record_raises_the_first_error_and_logs_the_other(topics, producer, ledger,
                                                                                          caplog):
    ids, start, end = four_new_transfers(ledger)
    reader, first, second = open_pg(), open_pg(), open_pg()
    first.close()
    second.close()
    try:
        with pytest.raises(psycopg.OperationalError), caplog.at_level("ERROR", produce_module.log.name):
            produce_window(reader, [first, second], producer, topics["in"], load_rules(), start=start, end=end,
                           redrive=True, batch_size=4)
    finally:
        reader.close()

    assert [r.exc_info[0] for r in caplog.records if r.name == produce_module.log.name] == [psycopg.OperationalError]
    assert published(ledger, ids) == []


def produce_with_the_second_batch_failing(ledger, producer, topic: str, monkeypatch, publish_step) -> list[str]:
    """Produce four new transactions in batches of 2, recorded in two parts, publishing with `publish_step`, which
    is given an Event set as the task's thread fails on the second batch (a row that cannot be converted).
    Returns their ids."""
    ids, start, end = four_new_transfers(ledger)
    converted = 0
    second_batch_failing = threading.Event()

    def to_message_failing_in_the_second_batch(*args):
        nonlocal converted
        converted += 1
        if converted == 3:
            second_batch_failing.set()
            raise ValueError("a row that cannot be converted")
        return to_message(*args)

    monkeypatch.setattr(produce_module, "publish", partial(publish_step, second_batch_failing))
    monkeypatch.setattr(produce_module, "to_message", to_message_failing_in_the_second_batch)
    reader, *writers = open_pg(), open_pg(), open_pg()
    try:
        with pytest.raises(ValueError, match="cannot be converted"):
            produce_window(reader, writers, producer, topic, load_rules(), start=start, end=end, redrive=True,
                           batch_size=2)
    finally:
        for conn in (reader, *writers):
            conn.close()
    return ids


def test_a_batch_the_broker_acknowledged_is_recorded_even_when_the_next_batch_fails(topics, producer, ledger,
                                                                                   monkeypatch):
    """A failure in the task's thread stops produce, but the follow-ups still running finish: the batch being
    published when it failed is recorded once acknowledged, in parts."""
    def publish_once_the_second_fails(second_batch_failing, *args, **kwargs):  # the first is being published then
        assert second_batch_failing.wait(30)
        return publish(*args, **kwargs)

    ids = produce_with_the_second_batch_failing(ledger, producer, topics["in"], monkeypatch,
                                                publish_once_the_second_fails)

    assert len(read_all(topics["in"], 2)) == 2
    assert published(ledger, ids) == ids[:2]


def test_a_publish_that_fails_while_the_next_batch_fails_is_logged_and_its_batch_not_recorded(
        topics, producer, ledger, monkeypatch, caplog):
    """The run raises the task thread's error; the error of the batch then being published would otherwise be
    lost. The batch is not recorded: it goes out again."""
    def publish_failing_late(second_batch_failing, *args, **kwargs):  # fails after the second batch failed to convert
        assert second_batch_failing.wait(30)
        raise DeliveryFailed("the broker went away")

    with caplog.at_level("ERROR", produce_module.log.name):
        ids = produce_with_the_second_batch_failing(ledger, producer, topics["in"], monkeypatch, publish_failing_late)

    assert [r.getMessage() for r in caplog.records if r.name == produce_module.log.name] == [
        "a follow-up failed too: DeliveryFailed('the broker went away')"], "the publish, not the record after it"
    assert published(ledger, ids) == []


def test_the_backlog_counts_what_the_group_has_not_committed_without_consuming_it(topics, producer):
    publish(producer, topics["in"], ((None, f"m{i}".encode()) for i in range(25)))
    group_id = f"test-{uuid.uuid4().hex[:8]}"

    watcher = consumer_of(topics["in"], group_id)
    assert backlog(watcher, topics["in"]) == 25, "a group with no commit has everything from the earliest offset"
    assert backlog(watcher, topics["in"]) == 25, "looking at the backlog consumes nothing"
    watcher.close()

    worker = consumer_of(topics["in"], group_id)
    batches = consume_batches(worker, 10, time_budget=30, idle_timeout=1)
    first = next(batches)
    assert len(first) == 10
    commit(worker, first)
    worker.close()

    watcher = consumer_of(topics["in"], group_id)
    assert backlog(watcher, topics["in"]) == 15
    watcher.close()


def test_a_commit_past_the_end_of_the_log_counts_and_drains_from_the_earliest(topics, producer):
    """A broker that crashed uncleanly can lose the tail of a log that a group had read and committed. The group's
    offset is then past the end: a re-drive's messages must not wait behind it (a backlog of 0 keeps the sensor
    waiting) nor be skipped once the log grows past it."""
    publish(producer, topics["in"], ((None, f"m{i}".encode()) for i in range(5)))
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    # a client that has not subscribed: a commit made while a subscription's join is under way may be refused
    committer = LedgerflowConsumerHook([topics["in"]], group_id, topology.KAFKA_CONN_ID).get_conn
    committer.commit(offsets=[TopicPartition(topics["in"], 0, 100)], asynchronous=False)
    assert backlog(committer, topics["in"]) == 5
    committer.close()
    worker = consumer_of(topics["in"], group_id)
    try:
        assert [m.value() for batch in consume_batches(worker, 100, time_budget=30, idle_timeout=1)
                for m in batch] == [f"m{i}".encode() for i in range(5)]
    finally:
        worker.close()


def test_the_trigger_fires_with_the_backlog_of_its_group_and_consumes_nothing(topics, producer):
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    trigger = KafkaBacklogTrigger(topics["in"], group_id, topology.KAFKA_CONN_ID, poll_interval=0.1)

    async def first_event_once_published():
        events = trigger.run()
        waiting = asyncio.ensure_future(anext(events))
        await asyncio.sleep(1)
        assert not waiting.done(), "an empty topic has no backlog"
        await asyncio.to_thread(publish, producer, topics["in"], ((None, f"m{i}".encode()) for i in range(3)))
        return (await asyncio.wait_for(waiting, 30)).payload

    assert asyncio.run(first_event_once_published()) == {"topic": topics["in"], "group_id": group_id, "backlog": 3}
    assert group_backlog(topics["in"], group_id, topology.KAFKA_CONN_ID) == 3


def test_a_cancelled_trigger_closes_its_consumer_after_the_call_under_way_on_the_same_thread(topics, monkeypatch):
    """The triggerer cancels the trigger of a run that failed or was cleared, but not a call on the consumer under
    way in a thread: closing the consumer from another thread meanwhile could free librdkafka's handle under it."""
    calls = []
    looking = threading.Event()

    def slow_backlog(consumer, topic):
        looking.set()
        calls.append(("backlog", threading.get_ident()))
        time.sleep(1)
        waiting = backlog(consumer, topic)
        calls.append(("backlog done", threading.get_ident()))
        return waiting

    class ClosingSeen:
        """The real consumer, with its closing noted."""
        def __init__(self, consumer):
            self.consumer = consumer

        def __getattr__(self, name):
            return getattr(self.consumer, name)

        def close(self):
            calls.append(("close", threading.get_ident()))
            self.consumer.close()

    opened = LedgerflowConsumerHook._get_client
    monkeypatch.setattr(LedgerflowConsumerHook, "_get_client", lambda hook, config: ClosingSeen(opened(hook, config)))
    monkeypatch.setattr(backlog_trigger_module, "backlog", slow_backlog)

    async def cancelled_while_it_looks():
        waiting = asyncio.ensure_future(anext(KafkaBacklogTrigger(
            topics["in"], f"test-{uuid.uuid4().hex[:8]}", topology.KAFKA_CONN_ID).run()))
        await asyncio.to_thread(looking.wait, 30)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(cancelled_while_it_looks())
    deadline = time.monotonic() + 30
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [call for call, _ in calls] == ["backlog", "backlog done", "close"]
    assert len({thread for _, thread in calls}) == 1


@pytest.fixture
def topic_of_three_partitions():
    """A topic partitioned as the pipeline's are (the other tests' topics have one partition), deleted afterwards."""
    with fresh_topics("partitioned", partitions=3) as names:
        yield names["partitioned"]


def test_a_batch_from_every_partition_is_committed_on_every_partition(topic_of_three_partitions, producer):
    topic = topic_of_three_partitions
    publish(producer, topic, ((f"account-{i}".encode(), f"m{i}".encode()) for i in range(30)))
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    worker = consumer_of(topic, group_id)
    try:
        batches = list(consume_batches(worker, 100, time_budget=30, idle_timeout=1))
        assert {m.partition() for batch in batches for m in batch} == {0, 1, 2}
        assert sum(map(len, batches)) == 30
        # one fetch from the one broker serves all three partitions: a batch holds messages of more than one
        assert any(len({m.partition() for m in batch}) > 1 for batch in batches)
        assert group_backlog(topic, group_id, topology.KAFKA_CONN_ID) == 30, "summed over the three partitions"

        for batch in batches:
            commit(worker, batch)

        committed = worker.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert [c.offset for c in committed] == [worker.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                                                 for p in range(3)]
    finally:
        worker.close()
    assert group_backlog(topic, group_id, topology.KAFKA_CONN_ID) == 0


class CountingConsumer:
    """A consumer that counts its fetches of more messages (`consume`) after the first `poll`."""

    def __init__(self, consumer):
        self.consumer, self.fetches = consumer, 0

    def poll(self, timeout):
        return self.consumer.poll(timeout)

    def consume(self, **kwargs):
        self.fetches += 1
        return self.consumer.consume(**kwargs)

    def close(self):
        self.consumer.close()


def test_a_drain_takes_a_backlog_in_full_batches_in_order_and_ends_when_the_topic_is_idle(topics, producer):
    publish(producer, topics["in"], ((None, f"m{i}".encode()) for i in range(25)))
    consumer = CountingConsumer(consumer_of(topics["in"]))
    events, batches = [], []
    try:
        # the first message is announced before the rest of its batch is fetched, so a task's rate starts there
        for batch in consume_batches(consumer, 10, time_budget=60, idle_timeout=1,
                                     on_first_message=lambda: events.append(f"first message, {consumer.fetches} "
                                                                            "fetches after it")):
            events.append(f"batch of {len(batch)}")
            batches.append(batch)
    finally:
        consumer.close()
    assert events == ["first message, 0 fetches after it", "batch of 10", "batch of 10", "batch of 5"]
    assert [m.value() for b in batches for m in b] == [f"m{i}".encode() for i in range(25)]


def test_a_drain_stops_between_batches_once_told_to_stop(topics, producer):
    publish(producer, topics["in"], ((None, f"m{i}".encode()) for i in range(25)))
    consumer = consumer_of(topics["in"])
    batches = []
    try:
        for batch in consume_batches(consumer, 10, time_budget=60, idle_timeout=30, keep_going=lambda: not batches):
            batches.append(batch)
    finally:
        consumer.close()
    assert [len(b) for b in batches] == [10]


# A settle task's process, started by a supervising process that then ends, as when a worker is killed: the settle
# process prints its summary when its drain is over.
ORPHANED_SETTLE = """
import sys
from types import SimpleNamespace
from ledgerflow import topology
from ledgerflow.operators.settle import SettleTransactionsOperator
ti = SimpleNamespace(dag_id="tests", run_id="orphaned", task_id="settle", try_number=1, map_index=-1)
print(SettleTransactionsOperator(
    task_id="settle", topic=sys.argv[1], group_id=sys.argv[2], dead_letter_topic=sys.argv[3],
    kafka_config_id=topology.KAFKA_CONN_ID, postgres_conn_id=topology.POSTGRES_CONN_ID,
    redis_conn_id=topology.REDIS_CONN_ID, idle_timeout=120).execute({"ti": ti}), flush=True)
"""


def test_a_task_whose_supervising_process_is_gone_stops_draining_and_returns_what_it_settled(
        topics, producer, ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    [cleared] = ledger.transactions((source, destination, "10.00"), status="cleared")
    publish(producer, topics["in"], [(source.encode(), cleared_message(ledger, cleared, "10.00", source, destination))])
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    # the supervisor: starts the task, says its pid, and ends when told to
    with subprocess.Popen(["bash", "-c", '"$0" -c "$1" "$2" "$3" "$4" & echo $!; read -r _', sys.executable,
                           ORPHANED_SETTLE, topics["in"], group_id, topics["dlq"]],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as supervisor:
        task = int(supervisor.stdout.readline())
        deadline = time.monotonic() + 60
        while ledger.statuses([cleared]) != {cleared: "settled"}:
            assert time.monotonic() < deadline, "the task settled its batch"
            time.sleep(0.2)
        try:
            # The supervisor ends, the topic stays open (idle_timeout 120): the output ends when the task does.
            output, _ = supervisor.communicate("\n", timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(task, signal.SIGKILL)  # still holding the output, so still the task
            raise AssertionError("the task did not stop draining once its supervisor was gone") from None
    assert ast.literal_eval(output.splitlines()[-1])["settled"] == 1, "it returned its summary: " + output
    assert group_backlog(topics["in"], group_id, topology.KAFKA_CONN_ID) == 0, "its batch is committed"


# A settle task's process whose SIGTERM calls the operator's on_kill, as Airflow's task runner does (a worker passes
# the signal on when it is told to stop, as the scheduler does in `make stop`).
STOPPED_SETTLE = """
import signal, sys
from types import SimpleNamespace
from ledgerflow import topology
from ledgerflow.operators.settle import SettleTransactionsOperator
ti = SimpleNamespace(dag_id="tests", run_id="stopped", task_id="settle", try_number=1, map_index=-1)
operator = SettleTransactionsOperator(
    task_id="settle", topic=sys.argv[1], group_id=sys.argv[2], dead_letter_topic=sys.argv[3],
    kafka_config_id=topology.KAFKA_CONN_ID, postgres_conn_id=topology.POSTGRES_CONN_ID,
    redis_conn_id=topology.REDIS_CONN_ID, idle_timeout=120)
signal.signal(signal.SIGTERM, lambda signum, frame: operator.on_kill())
print(operator.execute({"ti": ti}), flush=True)
"""


def test_a_task_told_to_stop_ends_its_drain_and_returns_what_it_settled(topics, producer, ledger):
    source, destination = ledger.accounts("100.00", "0.00")
    [cleared] = ledger.transactions((source, destination, "10.00"), status="cleared")
    publish(producer, topics["in"], [(source.encode(), cleared_message(ledger, cleared, "10.00", source, destination))])
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    with subprocess.Popen([sys.executable, "-c", STOPPED_SETTLE, topics["in"], group_id, topics["dlq"]],
                          stdout=subprocess.PIPE, text=True) as task:
        deadline = time.monotonic() + 60
        while ledger.statuses([cleared]) != {cleared: "settled"}:
            assert time.monotonic() < deadline, "the task settled its batch"
            time.sleep(0.2)
        task.send_signal(signal.SIGTERM)
        try:
            # the topic stays open (idle_timeout 120): the output ends when the task does
            output, _ = task.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            task.kill()
            raise AssertionError("the task did not stop draining once told to") from None
    assert task.returncode == 0, output
    assert ast.literal_eval(output.splitlines()[-1])["settled"] == 1, "it returned its summary: " + output
    assert group_backlog(topics["in"], group_id, topology.KAFKA_CONN_ID) == 0, "its batch is committed"


# A task's consumer as a process of its own, which takes its batch and is then killed (no close(), so it never
# leaves its group), as a worker that runs out of memory or is killed by a deploy.
KILLED_CONSUMER = """
import sys, time
from ledgerflow import topology
from ledgerflow.store.kafka import LedgerflowConsumerHook
consumer = LedgerflowConsumerHook([sys.argv[1]], sys.argv[2], topology.KAFKA_CONN_ID).get_consumer()
deadline = time.monotonic() + 30
while consumer.poll(1) is None:
    if time.monotonic() > deadline:
        sys.exit("no message in 30 s")
print("holding", flush=True)
sys.stdin.read()
"""


def test_the_run_after_a_killed_one_takes_the_backlog_in_its_first_poll(topics, producer):
    publish(producer, topics["in"], [(None, b"m0")])
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    with subprocess.Popen([sys.executable, "-c", KILLED_CONSUMER, topics["in"], group_id],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as killed:
        try:
            assert killed.stdout.readline() == "holding\n", "the consumer to kill got no message"
        finally:
            killed.kill()

    consumer = consumer_of(topics["in"], group_id)
    # The group gives the killed member's partition away when its session times out, which must come within the
    # first poll the operators make (consume_batches' default first_wait).
    try:
        first = next(consume_batches(consumer, 10, time_budget=30, idle_timeout=1), [])
    finally:
        consumer.close()
    assert [m.value() for m in first] == [b"m0"], "the first poll waited out a session longer than itself"


def test_a_delivery_the_broker_does_not_acknowledge_fails_the_publish(producer):
    missing_topic = f"test-{uuid.uuid4().hex[:8]}-does-not-exist"  # auto-creation is off
    try:
        with pytest.raises(DeliveryFailed, match=f"of 2 messages to {missing_topic} failed, 2 unacknowledged"):
            publish(producer, missing_topic, [(b"k", b"one"), (b"k", b"two")], flush_timeout=2)
    finally:
        producer.purge()  # the two undeliverable messages


def test_bad_messages_go_to_the_dead_letter_topic_with_the_reason_and_the_batch_goes_on(
        topics, producer, ledger):
    source, destination = ledger.accounts("1000.00", "0.00")
    good, disagreeing, written_long = ledger.transactions(
        (source, destination, "100.00"), (source, destination, "50.00"), (source, destination, "20.00"))
    unknown = f"{ledger.prefix}-unknown"
    good_message = transaction_message(ledger, good, "100.00", source, destination)
    publish(producer, topics["in"], [
        (b"k", b"not json at all"),
        (b"k", good_message.replace(b'"TRANSFER"', b'"TRANS\xffFER"')),  # not UTF-8 inside a string
        (b"k", good_message.replace(good.encode(), good.encode() + b"\\u0000")),  # PostgreSQL stores no NUL
        (b"k", transaction_message(ledger, good, "999.00", source, destination)),  # a false copy before the true one
        (b"k", transaction_message(ledger, disagreeing, "5000.00", source, destination)),
        (b"k", transaction_message(ledger, unknown, "10.00", source, destination)),
        (b"k", good_message),
        (b"k", transaction_message(ledger, written_long, "20.000", source, destination)),
        (b"k", transaction_message(ledger, good, "888.00", source, destination)),  # and one after it
        (b"k", good_message),  # a copy: decided once
    ])
    messages = read_all(topics["in"], 10)

    result = clear_batch_of(ledger, producer, topics, messages).complete()

    assert (result["decided"], result["published"], result["dead_lettered"]) == (2, 2, 7)
    assert ledger.statuses([good, disagreeing, written_long]) == {
        good: "cleared", disagreeing: "pending", written_long: "cleared"}
    dead = read_all(topics["dlq"], 7)
    reasons = [dict(m.headers())["reason"].decode() for m in dead]
    assert reasons[0].startswith("JSON is malformed"), reasons[0]
    assert reasons[1].startswith("not UTF-8"), reasons[1]
    assert reasons[2].startswith("`transaction_id` contains NUL"), reasons[2]
    assert "message says 999.00" in reasons[3] and "the ledger says 100.00" in reasons[3], reasons[3]
    assert "message says 5000.00" in reasons[4] and "the ledger says 50.00" in reasons[4], reasons[4]
    assert f"transaction {unknown} is not in the ledger" == reasons[5]
    assert "message says 888.00" in reasons[6], reasons[6]
    assert [dict(m.headers())["source_offset"] for m in dead] == [b"0", b"1", b"2", b"3", b"4", b"5", b"8"]
    assert dead[0].value() == b"not json at all", "a dead letter carries the message unchanged"

    outcomes = [decode_cleared(m.value()) for m in read_all(topics["out"], 2)]
    assert [(o.transaction_id, o.status, o.amount) for o in outcomes] == [
        (good, "cleared", Decimal("100.00")), (written_long, "cleared", Decimal("20.00"))]


class LargeMessageProducerHook(LedgerflowProducerHook):
    """A producer that sends what a topic takes from other producers: up to its max.message.bytes (1,048,588)."""

    def _get_client(self, config):
        return super()._get_client({**config, "message.max.bytes": 2_000_000})


def test_a_message_too_large_for_a_dead_letter_as_it_came_is_dead_lettered_cut_and_the_batch_goes_on(
        topics, producer, ledger):
    source, destination = ledger.accounts("1000.00", "0.00")
    [good] = ledger.transactions((source, destination, "100.00"))
    large = LargeMessageProducerHook(kafka_config_id=topology.KAFKA_CONN_ID).get_producer()
    wrong_tag = b'{"schema": "' + b"v" * 8000 + b'"}'  # msgspec's reason quotes the tag
    publish(large, topics["in"], [(b"k" * 2000, b"x" * 1_040_000), (b"k", wrong_tag),
                                  (b"k", transaction_message(ledger, good, "100.00", source, destination))])
    messages = read_all(topics["in"], 3)

    result = clear_batch_of(ledger, producer, topics, messages).complete()

    assert (result["decided"], result["dead_lettered"]) == (1, 2)
    assert ledger.statuses([good]) == {good: "cleared"}
    too_large, quoted = read_all(topics["dlq"], 2)
    assert (too_large.key(), too_large.value()) == (b"k" * 1024, b"x" * 512 * 1024)
    assert dict(too_large.headers())["truncated"] == b"key 2000, value 1040000"
    assert dict(too_large.headers())["reason"].startswith(b"JSON is malformed")
    reason = dict(quoted.headers())["reason"]
    assert len(reason) == 4096 and reason.startswith(b"Invalid value 'vvv")
    quoted_reason = decode_transaction(wrong_tag).reason.encode()
    assert dict(quoted.headers())["truncated"] == f"reason {len(quoted_reason)}".encode()
    assert quoted.value() == wrong_tag, "a message that fits is dead-lettered unchanged"


def settle_published(topics, producer, ledger, values: list[bytes]) -> tuple[dict[str, int], object]:
    """Publish `values` to the input topic, read them back and settle them as one batch on the ledger's
    connection: the batch's counts, and the Redis client its records went to."""
    publish(producer, topics["in"], [(b"k", value) for value in values])
    messages = read_all(topics["in"], len(values))
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    return settle_batch(ledger.conn, redis_client, producer, messages, CONTEXT, topics["dlq"],
                        projection_conn=ledger.conn).complete(), redis_client


def test_settle_dead_letters_a_bad_outcome_and_settles_the_rest(topics, producer, ledger):
    source, destination = ledger.accounts("1000.00", "0.00")
    [cleared] = ledger.transactions((source, destination, "100.00"), status="cleared")
    [pending] = ledger.transactions((source, destination, "10.00"))
    unknown = f"{ledger.prefix}-unknown"
    outcome = cleared_message(ledger, cleared, "100.00", source, destination)
    assert b'"reason":""' in outcome

    result, redis_client = settle_published(topics, producer, ledger, [
        cleared_message(ledger, unknown, "1.00", source, destination),  # clear publishes only what the
        cleared_message(ledger, pending, "10.00", source, destination),  # ledger records
        transaction_message(ledger, cleared, "100.00", source, destination),  # the other contract
        outcome.replace(b'"reason":""', b'"reason":"\xff"'),  # not UTF-8 inside a string
        outcome,
        cleared_message(ledger, unknown, "1.00", source, destination),  # every copy is dead-lettered
    ])

    assert (result["settled"], result["dead_lettered"], result["already_done"], result["projected"]) == (1, 5, 0, 1)
    assert ledger.balances([source, destination]) == {source: Decimal("900.00"), destination: Decimal("100.00")}
    assert ledger.statuses([pending]) == {pending: "pending"}
    dead = read_all(topics["dlq"], 5)
    assert [dict(m.headers())["source_offset"] for m in dead] == [b"0", b"1", b"2", b"3", b"5"], \
        "in the order they came"
    reasons = [dict(m.headers())["reason"].decode() for m in dead]
    assert reasons[:2] == [f"transaction {unknown} is not in the ledger",
                           f"the ledger has transaction {pending} pending"]
    assert "`$.schema`" in reasons[2] and reasons[3].startswith("not UTF-8"), reasons
    assert reasons[4] == f"transaction {unknown} is not in the ledger"
    assert redis_client.hget(f"settlement:{cleared}", "from_balance_after") == b"900.00"


def test_settle_dead_letters_the_outcomes_the_ledger_says_clear_did_not_publish(topics, producer, ledger):
    """Clear publishes an outcome only once the ledger records it, and rejected is terminal: a rejection of a
    transaction the ledger has not rejected, or an outcome to settle of one under review, did not come from
    clear. A false rejection ahead of a transaction's outcome to settle does not keep it from settling; a true
    one (a transfer rejected at settlement, published again) is no error."""
    source, destination = ledger.accounts("1000.00", "0.00")
    cleared, behind_a_false_rejection = ledger.transactions(
        (source, destination, "100.00"), (source, destination, "30.00"), status="cleared")
    [pending] = ledger.transactions((source, destination, "10.00"))
    [in_review] = ledger.transactions((source, destination, "20.00"), status="requires_manual_review")
    [rejected] = ledger.transactions((source, destination, "5000.00"), status="rejected")
    unknown = f"{ledger.prefix}-unknown"
    rejection = partial(cleared_message, ledger, status=Status.REJECTED, reason_code=ReasonCode.INSUFFICIENT_FUNDS)

    result, redis_client = settle_published(topics, producer, ledger, [
        rejection(unknown, "1.00", source, destination),
        rejection(pending, "10.00", source, destination),
        rejection(behind_a_false_rejection, "30.00", source, destination),
        cleared_message(ledger, in_review, "20.00", source, destination),
        cleared_message(ledger, cleared, "100.00", source, destination),
        cleared_message(ledger, behind_a_false_rejection, "30.00", source, destination),
        cleared_message(ledger, rejected, "5000.00", source, destination),
        rejection(rejected, "5000.00", source, destination),
        rejection(cleared, "100.00", source, destination),  # after the outcome that settles it
        cleared_message(ledger, in_review, "20.00", source, destination),  # a copy: dead-lettered too
    ])

    assert (result["settled"], result["dead_lettered"], result["already_done"], result["projected"]) == (2, 6, 1, 3)
    assert ledger.balances([source, destination]) == {source: Decimal("870.00"), destination: Decimal("130.00")}
    assert ledger.statuses([pending, in_review, behind_a_false_rejection]) == {
        pending: "pending", in_review: "requires_manual_review", behind_a_false_rejection: "settled"}
    dead = read_all(topics["dlq"], 6)
    assert [dict(m.headers())["source_offset"] for m in dead] == [b"0", b"1", b"2", b"3", b"8", b"9"]
    assert [dict(m.headers())["reason"].decode() for m in dead] == [
        f"transaction {unknown} is not in the ledger", f"the ledger has transaction {pending} pending",
        f"the ledger has transaction {behind_a_false_rejection} settled",
        f"the ledger has transaction {in_review} requires_manual_review",
        f"the ledger has transaction {cleared} settled",
        f"the ledger has transaction {in_review} requires_manual_review"]
    assert redis_client.hget(f"settlement:{behind_a_false_rejection}", "from_balance_after") == b"870.00"
    assert redis_client.hget(f"rejected:{rejected}", "status") == b"rejected"
    assert not redis_client.exists(f"rejected:{unknown}", f"rejected:{pending}", f"rejected:{behind_a_false_rejection}")


class QuickToFailProducerHook(LedgerflowProducerHook):
    """Gives up on a delivery after 2 s instead of the 60 s the flush allows."""

    def _get_client(self, config):
        return super()._get_client({**config, "message.timeout.ms": 2000})


def test_a_settlement_whose_dead_letters_are_not_delivered_is_rolled_back_and_locks_nothing(topics, producer, ledger):
    source, destination = ledger.accounts("1000.00", "0.00")
    [cleared] = ledger.transactions((source, destination, "100.00"), status="cleared")
    publish(producer, topics["in"], [(b"k", b"not json"),
                                     (b"k", cleared_message(ledger, cleared, "100.00", source, destination))])
    messages = read_all(topics["in"], 2)
    conn = open_pg()
    try:
        with pytest.raises(DeliveryFailed):
            settle_batch(conn, None, QuickToFailProducerHook(kafka_config_id=topology.KAFKA_CONN_ID).get_producer(),
                         messages, CONTEXT, f"{ledger.prefix}-no-such-topic", projection_conn=ledger.conn)

        assert conn.info.transaction_status == TransactionStatus.IDLE
    finally:
        conn.close()
    assert ledger.statuses([cleared]) == {cleared: "cleared"}
    ledger.conn.execute("SET lock_timeout = '2s'")  # a transaction left locked would fail the settlement below
    assert [type(o) for o in settle(ledger.conn, [cleared], CONTEXT).outcomes] == [Settled]


def run_settle(topics, group_id: str, run_id: str, **settings) -> dict:
    """One run of the settle operator on the test's topics, as a task instance of run `run_id` runs it; `settings`
    override the operator's (by default Redis is the stack's and a run ends a second after its topic is idle)."""
    ti = SimpleNamespace(dag_id="tests", run_id=run_id, task_id="settle", try_number=1, map_index=-1)
    return SettleTransactionsOperator(
        task_id="settle", topic=topics["in"], group_id=group_id, dead_letter_topic=topics["dlq"],
        kafka_config_id=topology.KAFKA_CONN_ID, postgres_conn_id=topology.POSTGRES_CONN_ID,
        **{"redis_conn_id": topology.REDIS_CONN_ID, "idle_timeout": 1, **settings}).execute({"ti": ti})


def test_settle_drains_batch_after_batch_on_its_connections_in_turn_and_settles_a_redelivery_once(
        topics, producer, ledger):
    """Batches of 2: each batch's transactions are locked while the one before settles, on connections
    taken in turn; a transaction delivered again in a later batch is settled once."""
    source, destination = ledger.accounts("1000.00", "0.00")
    ids = ledger.transactions(*[(source, destination, "10.00")] * 7, status="cleared")
    outcome = {i: cleared_message(ledger, i, "10.00", source, destination) for i in ids}
    publish(producer, topics["in"], [(source.encode(), outcome[i]) for i in [*ids, ids[2]]])
    group_id = f"test-{uuid.uuid4().hex[:8]}"

    summary = run_settle(topics, group_id, "test_settle_drains", batch_size=2)

    assert (summary["batches"], summary["settled"], summary["already_done"], summary["projected"]) == (4, 7, 1, 8)
    assert ledger.balances([source, destination]) == {source: Decimal("930.00"), destination: Decimal("70.00")}
    assert ledger.reconciliation_gaps([source, destination]) == []
    assert [len(ledger.audit(i)) for i in ids] == [2] * 7
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    assert [redis_client.hget(f"settlement:{i}", "from_balance_after") for i in ids] == [
        f"{990 - 10 * n}.00".encode() for n in range(7)]
    assert group_backlog(topics["in"], group_id, topology.KAFKA_CONN_ID) == 0


def test_settle_behind_a_session_that_holds_its_rows_fails_after_the_lock_timeout_and_settles_later(
        topics, producer, ledger):
    """Not a task that runs for ever while settlement stands still: it fails, visibly, with its batch
    uncommitted, and once the rows are free a new run settles the batch."""
    source, destination = ledger.accounts("1000.00", "0.00")
    [cleared] = ledger.transactions((source, destination, "10.00"), status="cleared")
    publish(producer, topics["in"], [(source.encode(), cleared_message(ledger, cleared, "10.00", source, destination))])
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    settle_run = partial(run_settle, topics, group_id, "test_settle_lock_timeout", lock_timeout=1)

    holder = open_pg()
    try:
        with holder.transaction():
            holder.execute("SELECT FROM transactions WHERE transaction_id = %s FOR UPDATE", (cleared,))
            started = time.monotonic()
            with pytest.raises(psycopg.errors.LockNotAvailable):
                settle_run()
            assert time.monotonic() - started < 20
        assert group_backlog(topics["in"], group_id, topology.KAFKA_CONN_ID) == 1
        assert ledger.statuses([cleared]) == {cleared: "cleared"}
    finally:
        holder.close()

    assert settle_run()["settled"] == 1
    assert ledger.balances([source, destination]) == {source: Decimal("990.00"), destination: Decimal("10.00")}


def test_a_settlement_redis_refuses_is_not_committed_and_its_redelivery_writes_the_record_from_the_ledger(
        topics, producer, ledger, monkeypatch):
    """settle commits its offsets only once Redis has the records: here Redis refuses them after PostgreSQL
    committed. The task fails with the message uncommitted; the next run takes it as the duplicate it is, settles
    nothing again, and writes the record from the ledger."""
    source, destination = ledger.accounts("1000.00", "0.00")
    [cleared] = ledger.transactions((source, destination, "10.00"), status="cleared")
    publish(producer, topics["in"], [(source.encode(), cleared_message(ledger, cleared, "10.00", source, destination))])
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    real = urlsplit(os.environ["AIRFLOW_CONN_LEDGERFLOW_REDIS"])
    monkeypatch.setenv("AIRFLOW_CONN_LEDGERFLOW_REDIS_WRONG_PASSWORD",
                       urlunsplit(real._replace(netloc=f":not-the-password@{real.hostname}:{real.port}")))

    with pytest.raises(redis.exceptions.AuthenticationError):
        run_settle(topics, group_id, "test_settle_redis_refuses", redis_conn_id="ledgerflow_redis_wrong_password")

    assert ledger.statuses([cleared]) == {cleared: "settled"}
    assert group_backlog(topics["in"], group_id, topology.KAFKA_CONN_ID) == 1
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    assert not redis_client.exists(f"settlement:{cleared}")

    summary = run_settle(topics, group_id, "test_settle_redis_refuses")

    assert (summary["settled"], summary["already_done"], summary["projected"]) == (0, 1, 1)
    assert group_backlog(topics["in"], group_id, topology.KAFKA_CONN_ID) == 0
    record = redis_client.hgetall(f"settlement:{cleared}")
    assert (record[b"from_balance_before"], record[b"from_balance_after"], record[b"to_balance_after"]) == (
        b"1000.00", b"990.00", b"10.00")
    assert ledger.balances([source, destination]) == {source: Decimal("990.00"), destination: Decimal("10.00")}
    assert len(ledger.audit(cleared)) == 2


def test_a_record_key_another_writer_left_holding_no_hash_is_replaced_rather_than_stopping_settle(
        topics, producer, ledger, caplog):
    """`settlement:` and `rejected:` keys are the pipeline's: one holding a string (an operator's SET, another
    application) made every HSET of its batch's redelivery fail with WRONGTYPE, so settle stood still behind it.
    The record is written from the ledger in its place, with a warning, and the rest of the batch as usual."""
    source, destination = ledger.accounts("15.00", "0.00")
    ids = ledger.transactions(*[(source, destination, "10.00")] * 3, status="cleared")
    publish(producer, topics["in"], [(source.encode(), cleared_message(ledger, i, "10.00", source, destination))
                                     for i in ids])
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    redis_client.set(f"settlement:{ids[0]}", "not a record")
    redis_client.rpush(f"rejected:{ids[1]}", "nor this")
    group_id = f"test-{uuid.uuid4().hex[:8]}"

    summary = run_settle(topics, group_id, "test_settle_foreign_keys")

    assert (summary["settled"], summary["rejected_at_settlement"], summary["projected"]) == (1, 2, 3)
    assert group_backlog(topics["in"], group_id, topology.KAFKA_CONN_ID) == 0
    assert redis_client.hget(f"settlement:{ids[0]}", "from_balance_after") == b"5.00"
    assert [redis_client.hget(f"rejected:{i}", "reason_code") for i in ids[1:]] == [
        b"INSUFFICIENT_FUNDS_AT_SETTLEMENT"] * 2
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "replacing" in r.getMessage()]
    assert warning == (f"replacing 2 keys that held something other than a record: settlement:{ids[0]}, "
                       f"rejected:{ids[1]}")


def test_records_written_again_from_the_ledger_replace_keys_holding_no_hash(ledger, caplog):
    """The path rewrite-records and a redelivery take (the records read from the ledger) replaces a string or
    list under a record's key too, rather than stopping there."""
    source, destination = ledger.accounts("15.00", "0.00")
    ids = ledger.transactions((source, destination, "10.00"), (source, destination, "10.00"), status="cleared")
    settle(ledger.conn, ids, CONTEXT)
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    redis_client.set(f"settlement:{ids[0]}", "not a record")
    redis_client.rpush(f"rejected:{ids[1]}", "nor this")

    assert project(ledger.conn, redis_client, ids) == {ids[0]: Status.SETTLED, ids[1]: Status.REJECTED}

    assert redis_client.hget(f"settlement:{ids[0]}", "to_balance_after") == b"10.00"
    assert redis_client.hget(f"rejected:{ids[1]}", "available_balance") == b"5.00"
    [warning] = [r.getMessage() for r in caplog.records if "held something other than a record" in r.getMessage()]
    # in the order the ledger's query returned them
    assert warning.startswith("replacing 2 keys that held something other than a record: ")
    assert set(warning.split(": ")[1].split(", ")) == {f"settlement:{ids[0]}", f"rejected:{ids[1]}"}


def test_records_go_in_one_transaction_whose_refused_commands_are_reported_and_the_rest_taken():
    """Redis runs a MULTI's commands at EXEC, whose reply holds each one's: an error there is not a reply of its
    own, so it must be found in EXEC's reply, by the command's index, while the other commands took effect."""
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    key, other = f"test-multi-{uuid.uuid4().hex[:8]}", f"test-multi-{uuid.uuid4().hex[:8]}"
    try:
        refused = redis_projection._execute(redis_client, [hiredis.pack_command(command) for command in (
            ("SET", key, "a string"), ("HSET", key, "field", "value"), ("HSET", other, "field", "value"))])

        assert [(index, str(error).split()[0]) for index, error in refused] == [(1, "WRONGTYPE")]
        assert (redis_client.get(key), redis_client.hget(other, "field")) == (b"a string", b"value")
    finally:
        redis_client.delete(key, other)


def test_a_command_redis_refuses_to_queue_aborts_the_whole_transaction():
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    key = f"test-multi-{uuid.uuid4().hex[:8]}"
    with pytest.raises(redis.exceptions.ResponseError, match="wrong number of arguments"):
        redis_projection._execute(redis_client, [hiredis.pack_command(command) for command in (
            ("SET", key, "a string"), ("HSET", key))])

    assert not redis_client.exists(key), "nothing ran"


def test_the_redis_records_of_a_settlement_are_those_the_ledger_rebuilds(ledger):
    """settle writes the records of what it just decided from its own result; a redelivery rewrites them
    from the ledger. Both must write the same hashes, field for field."""
    source, destination = ledger.accounts("100.00", "5.00")
    ids = (ledger.transactions((source, destination, "60.00"), (source, destination, "50.00"), status="cleared")
           + ledger.transactions((source, destination, "40.00"), status="cleared_with_conditions"))
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    keys = [f"settlement:{ids[0]}", f"rejected:{ids[1]}", f"settlement:{ids[2]}"]

    result = settle(ledger.conn, ids, CONTEXT)
    recorded_as = {ids[0]: "settled", ids[1]: "rejected", ids[2]: "settled"}
    assert project(ledger.conn, redis_client, ids, result) == recorded_as
    from_settlement = [redis_client.hgetall(key) for key in keys]
    redis_client.delete(*keys)
    assert project(ledger.conn, redis_client, ids) == recorded_as
    from_ledger = [redis_client.hgetall(key) for key in keys]

    assert from_settlement == from_ledger
    assert from_ledger[1][b"available_balance"] == b"40.00"
    assert from_ledger[2][b"clearance_status"] == b"cleared_with_conditions"


def test_a_transaction_settled_without_journal_postings_gets_its_record_with_its_balances_unknown(ledger):
    """The original system settled transactions before the ledger kept a journal (sql/0002 keeps them): their
    records, when written again, say what the ledger knows and leave the balances empty, rather than stopping
    the rewrite of every record after them."""
    source, destination = ledger.accounts("100.00", "5.00")
    [old, settled_here] = ledger.transactions((source, destination, "7.00"), (source, destination, "8.00"),
                                              status="cleared")
    with ledger.conn.transaction():  # as the original system's rows stand after the migrations
        ledger.conn.execute("SET LOCAL ledgerflow.settling = 'on'")
        ledger.conn.execute("UPDATE transactions SET status = 'settled', status_reason_code = 'SETTLED' "
                            "WHERE transaction_id = %s", (old,))
    settle(ledger.conn, [settled_here], CONTEXT)
    settled_at = ledger.conn.execute("SELECT status_changed_at FROM transactions WHERE transaction_id = %s",
                                     (old,)).fetchone()[0]
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()

    assert project(ledger.conn, redis_client, [old, settled_here]) == {old: "settled", settled_here: "settled"}

    record = redis_client.hgetall(f"settlement:{old}")
    assert {field: record[field] for field in (b"status", b"amount", b"from_account", b"from_balance_before",
                                              b"from_balance_after", b"to_balance_before", b"to_balance_after",
                                              b"settlement_time")} == {
        b"status": b"settled", b"amount": b"7.00", b"from_account": source.encode(), b"from_balance_before": b"",
        b"from_balance_after": b"", b"to_balance_before": b"", b"to_balance_after": b"",
        b"settlement_time": settled_at.isoformat().encode()}
    assert redis_client.hget(f"settlement:{settled_here}", "from_balance_after") == b"92.00"


def test_rewrite_records_writes_again_from_the_ledger_what_was_settled_or_rejected_since_a_moment(ledger):
    """As settle would: the same hashes, field for field; and a rejection made by hand, which no stage publishes."""
    source, destination = ledger.accounts("100.00", "5.00")
    [earlier] = ledger.transactions((source, destination, "1.00"), status="cleared")
    settle(ledger.conn, [earlier], CONTEXT)
    since = ledger.conn.execute("SELECT clock_timestamp()").fetchone()[0]
    ids = ledger.transactions((source, destination, "60.00"), (source, destination, "50.00"), status="cleared")
    [by_hand] = ledger.transactions((source, destination, "2.00"), status="rejected")
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    assert project(ledger.conn, redis_client, ids, settle(ledger.conn, ids, CONTEXT)) == {
        ids[0]: "settled", ids[1]: "rejected"}
    keys = [f"settlement:{ids[0]}", f"rejected:{ids[1]}"]
    from_settlement = [redis_client.hgetall(key) for key in keys]
    redis_client.delete(*keys, f"settlement:{earlier}", f"rejected:{by_hand}")

    def rewrite_records(*margin: str):
        result = subprocess.run([sys.executable, str(REPO_ROOT / "include" / "rewrite_records.py"),
                                 "--since", since.isoformat(), *margin], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("wrote ") and result.stdout.endswith(" records from the ledger\n")

    rewrite_records("--margin", "0")

    assert [redis_client.hgetall(key) for key in keys] == from_settlement
    by_hand_record = redis_client.hgetall(f"rejected:{by_hand}")
    assert (by_hand_record[b"status"], by_hand_record[b"reason_code"]) == (b"rejected", b"REVIEW_DECLINED")
    assert not redis_client.exists(f"settlement:{earlier}"), "settled before --since: left alone"

    rewrite_records()  # by default, the records of the 15 minutes before too

    assert redis_client.hget(f"settlement:{earlier}", "from_balance_after") == b"99.00"


def test_rewrite_records_refuses_a_connection_that_would_hold_a_snapshot_while_it_writes():
    conn = open_pg()
    conn.autocommit = False  # the statement that declares the cursor would not commit: its snapshot would stay
    try:
        with pytest.raises(ValueError, match="needs a connection in autocommit"):
            rewrite(conn, RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn())
    finally:
        conn.close()


def test_clear_scores_a_transfer_and_names_its_parties_from_the_ledger_not_from_the_message(topics, producer, ledger):
    """The message carries produce's score (0: both customers were LOW then); the payer has been re-rated HIGH
    since, so the transfer of 12,000.00 scores 30 + 40 = 70, which clears with conditions, and the outcome
    names the payer as HIGH and the payee, a MEDIUM customer, as such."""
    [source] = ledger.accounts("20000.00")
    payee = ledger.add_customer("Payee", "MEDIUM")
    [destination] = ledger.accounts("0.00", customer=payee)
    [transfer] = ledger.transactions((source, destination, "12000.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, transfer, "12000.00", source, destination))])
    ledger.conn.execute("UPDATE customers SET risk_level = 'HIGH' WHERE customer_id = %s", (ledger.customer,))

    clear_batch_of(ledger, producer, topics, read_all(topics["in"], 1)).complete()

    assert ledger.conn.execute("SELECT status, risk_score FROM transactions WHERE transaction_id = %s",
                               (transfer,)).fetchone() == ("cleared_with_conditions", 70)
    [outcome] = [decode_cleared(m.value()) for m in read_all(topics["out"], 1)]
    assert (outcome.status, outcome.risk_score) == (Status.CLEARED_WITH_CONDITIONS, 70)
    assert outcome.from_customer == Customer(ledger.customer, "Test Customer", "HIGH")
    assert outcome.to_customer == Customer(payee, "Payee", "MEDIUM")


def test_clear_scores_and_records_a_transfer_rejected_by_hand_when_it_republishes_it(topics, producer, ledger):
    """A transfer rejected by hand before clear took it up has no score, which its outcome needs. clear scores
    it (6,000.00 between LOW customers: 15) and records the score, so the outcome, the ledger and the Redis
    record settle writes from the ledger all say 15."""
    source, destination = ledger.accounts("10000.00", "0.00")
    [transfer] = ledger.transactions((source, destination, "6000.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, transfer, "6000.00", source, destination))])
    ledger.conn.execute("UPDATE transactions SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED', "
                        "status_message = 'declined by hand' WHERE transaction_id = %s", (transfer,))

    result = clear_batch_of(ledger, producer, topics, read_all(topics["in"], 1)).complete()

    assert [result[k] for k in ("decided", "duplicates", "published")] == [0, 1, 1]
    [outcome] = [decode_cleared(m.value()) for m in read_all(topics["out"], 1)]
    assert (outcome.status, outcome.reason_code, outcome.risk_score) == (Status.REJECTED, "REVIEW_DECLINED", 15)
    assert ledger.conn.execute("SELECT risk_score FROM transactions WHERE transaction_id = %s",
                               (transfer,)).fetchone() == (15,)
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    assert project(ledger.conn, redis_client, [transfer]) == {transfer: "rejected"}
    assert redis_client.hget(f"rejected:{transfer}", "risk_score") == b"15"


def test_clear_records_as_published_a_transfer_a_killed_produce_run_published_without_recording_it(
        topics, producer, ledger):
    """The broker acknowledged the batch and the run was killed before recording it: no later produce run takes a
    transfer clear decided, so clear's decision records that it was published (else the waiting view would send it
    to a re-drive, and every produce run walk it among the unpublished, for ever)."""
    source, destination = ledger.accounts("100.00", "0.00")
    [transfer] = ledger.transactions((source, destination, "10.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, transfer, "10.00", source, destination))])

    clear_batch_of(ledger, producer, topics, read_all(topics["in"], 1)).complete()

    status, published_at, changed_at = ledger.conn.execute(
        "SELECT status, published_at, status_changed_at FROM transactions WHERE transaction_id = %s",
        (transfer,)).fetchone()
    assert (status, published_at) == ("cleared", changed_at)
    assert ledger.conn.execute("SELECT waits_for FROM transactions_waiting WHERE transaction_id = %s",
                               (transfer,)).fetchone() == ("settle",)


def test_a_review_approved_with_conditions_is_republished_and_settles_marked_as_such(topics, producer, ledger):
    """Over the review amount, a transfer goes to review whatever its score; one scoring in the conditions band
    (150,000.00 from a HIGH customer: 70) is approved with conditions, and keeps them through settlement."""
    source, destination = ledger.accounts("200000.00", "0.00", customer=ledger.add_customer("Risky", "HIGH"))
    [transfer] = ledger.transactions((source, destination, "150000.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, transfer, "150000.00", source, destination))])
    clear_batch_of(ledger, producer, topics, read_all(topics["in"], 1)).complete()
    assert ledger.conn.execute("SELECT status, status_reason_code, risk_score FROM transactions "
                               "WHERE transaction_id = %s", (transfer,)).fetchone() == (
        "requires_manual_review", "MANUAL_REVIEW_AMOUNT", 70)
    ledger.conn.execute("UPDATE transactions SET status = 'cleared_with_conditions', "
                        "status_reason_code = 'REVIEW_APPROVED_WITH_CONDITIONS', status_message = 'approved, ticket 1' "
                        "WHERE transaction_id = %s", (transfer,))

    # the re-drive: clear takes the message again and republishes what the ledger now records
    clear_batch_of(ledger, producer, topics, read_all(topics["in"], 1)).complete()
    [outcome] = read_all(topics["out"], 1)
    decoded = decode_cleared(outcome.value())
    assert (decoded.status, decoded.reason_code) == (Status.CLEARED_WITH_CONDITIONS, "REVIEW_APPROVED_WITH_CONDITIONS")
    with fresh_topics("cleared") as settle_topics:
        publish(producer, settle_topics["cleared"], [(source.encode(), outcome.value())])
        summary = run_settle({"in": settle_topics["cleared"], "dlq": topics["dlq"]}, f"test-{uuid.uuid4().hex[:8]}",
                             "test_review_with_conditions", batch_size=10)

    assert summary["settled"] == 1
    assert [row[:2] for row in ledger.audit(transfer)] == [
        ("pending", "requires_manual_review"), ("requires_manual_review", "cleared_with_conditions"),
        ("cleared_with_conditions", "settled")]
    redis_client = RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn()
    assert redis_client.hget(f"settlement:{transfer}", "clearance_status") == b"cleared_with_conditions"


def test_clear_records_a_transfer_for_manual_review_publishes_nothing_for_it_and_the_batch_goes_on(
        topics, producer, ledger):
    """Above 100,000.00 a transfer waits for a reviewer: recorded with its reason and audited, not published (no
    outcome contract has the status). It reserves nothing, so the transfer behind it clears."""
    source, destination = ledger.accounts("150000.00", "0.00")
    review, after = ledger.transactions((source, destination, "100000.01"), (source, destination, "60000.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, i, amount, source, destination))
                                     for i, amount in ((review, "100000.01"), (after, "60000.00"))])

    result = clear_batch_of(ledger, producer, topics, read_all(topics["in"], 2)).complete()

    assert [result[k] for k in ("decided", "published", "dead_lettered")] == [2, 1, 0]
    assert ledger.conn.execute("SELECT status, status_reason_code FROM transactions WHERE transaction_id = %s",
                               (review,)).fetchone() == ("requires_manual_review", "MANUAL_REVIEW_AMOUNT")
    assert [row[:3] for row in ledger.audit(review)] == [("pending", "requires_manual_review", "MANUAL_REVIEW_AMOUNT")]
    [outcome] = [decode_cleared(m.value()) for m in read_all(topics["out"], 1)]
    assert (outcome.transaction_id, outcome.status) == (after, Status.CLEARED)


def test_a_pending_transfer_deleted_while_its_batch_is_decided_is_dead_lettered_and_the_rest_clear(
        topics, producer, ledger):
    """Deleted by hand after clear read the batch and before it recorded it: the transition finds no row, and
    neither does the re-reading. Its message is dead-lettered, as it would have been had the row gone earlier."""
    source, destination = ledger.accounts("1000.00", "0.00")
    deleted, kept = ledger.transactions((source, destination, "10.00"), (source, destination, "20.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, i, amount, source, destination))
                                     for i, amount in ((deleted, "10.00"), (kept, "20.00"), (deleted, "10.00"))])
    decided = clear_batch_of(ledger, producer, topics, read_all(topics["in"], 3))
    ledger.conn.execute("DELETE FROM transactions WHERE transaction_id = %s", (deleted,))

    result = decided.complete()

    assert [result[k] for k in ("decided", "duplicates", "published", "dead_lettered")] == [1, 0, 1, 2]
    assert ledger.statuses([deleted, kept]) == {kept: "cleared"}
    dead = read_all(topics["dlq"], 2)  # the redelivered copy too
    assert [dict(m.headers())["reason"].decode() for m in dead] == [f"transaction {deleted} is not in the ledger"] * 2
    assert [dict(m.headers())["source_offset"] for m in dead] == [b"0", b"2"]
    [outcome] = [decode_cleared(m.value()) for m in read_all(topics["out"], 1)]
    assert outcome.transaction_id == kept


@pytest.mark.parametrize(("hand_change", "counts"), [
    ("UPDATE transactions SET status = 'rejected', status_reason_code = 'REVIEW_DECLINED', "
     "status_message = 'declined by hand' WHERE transaction_id = %s", [1, 1, 2, 0]),
    ("DELETE FROM transactions WHERE transaction_id = %s", [1, 0, 1, 1])], ids=["rejected by hand", "deleted"])
def test_a_transfer_taken_out_of_its_batch_while_it_is_decided_reserves_no_funds_for_the_rest(
        topics, producer, ledger, hand_change, counts):
    """Of 100.00, the batch's first transfer reserves 60.00, so its second (50.00) is refused. Once the first is
    rejected or deleted by hand before the batch is recorded, the second is decided again without it, and clears."""
    source, destination = ledger.accounts("100.00", "0.00")
    taken_out, after = ledger.transactions((source, destination, "60.00"), (source, destination, "50.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, i, amount, source, destination))
                                     for i, amount in ((taken_out, "60.00"), (after, "50.00"))])
    decided = clear_batch_of(ledger, producer, topics, read_all(topics["in"], 2))
    ledger.conn.execute(hand_change, (taken_out,))

    result = decided.complete()

    assert [result[k] for k in ("decided", "duplicates", "published", "dead_lettered")] == counts
    assert ledger.conn.execute("SELECT status, available_balance FROM transactions WHERE transaction_id = %s",
                               (after,)).fetchone() == ("cleared", Decimal("100.00"))
    [outcome] = [o for o in (decode_cleared(m.value()) for m in read_all(topics["out"], counts[2]))
                 if o.transaction_id == after]
    assert (outcome.status, outcome.available_balance) == (Status.CLEARED, Decimal("100.00"))


def test_transfers_cleared_by_hand_past_the_balance_while_the_batch_is_decided_leave_nothing_not_a_debt(
        topics, producer, ledger):
    """A change by hand checks no balance: two transfers of 9,000,000,000,000.00 from an empty account are cleared
    by hand while the batch holding them and a third is decided. The third is refused with nothing available,
    where -18,000,000,000,000.00 failed the batch (past what the ledger's money holds)."""
    source, destination = ledger.accounts("0.00", "0.00")
    big = "9000000000000.00"
    first, second, third = ledger.transactions((source, destination, big), (source, destination, big),
                                               (source, destination, "1.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, i, amount, source, destination))
                                     for i, amount in ((first, big), (second, big), (third, "1.00"))])
    decided = clear_batch_of(ledger, producer, topics, read_all(topics["in"], 3))
    ledger.conn.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED', "
                        "status_message = 'cleared by hand' WHERE transaction_id = ANY(%s)", ([first, second],))

    result = decided.complete()

    assert (result["decided"], result["duplicates"]) == (1, 2)
    assert ledger.conn.execute("SELECT status, status_reason_code, available_balance FROM transactions "
                               "WHERE transaction_id = %s", (third,)).fetchone() == (
        "rejected", "INSUFFICIENT_FUNDS", Decimal("0.00"))


def test_a_transfer_a_batch_before_cleared_takes_its_amount_first_in_the_batch_decided_beside_it(
        topics, producer, ledger):
    """Of 100.00, the batch before cleared the second transfer (60.00) on its own while this batch, which holds
    it too, was decided: it takes its amount first, so this batch's first transfer (60.00) is refused, though this
    batch had cleared it and refused the second, and the third (30.00) fits in what is left."""
    source, destination = ledger.accounts("100.00", "0.00")
    first, second, third = ledger.transactions(
        (source, destination, "60.00"), (source, destination, "60.00"), (source, destination, "30.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, i, amount, source, destination))
                                     for i, amount in ((second, "60.00"), (first, "60.00"), (second, "60.00"),
                                                       (third, "30.00"))])
    messages = read_all(topics["in"], 4)
    recording = open_pg()
    try:
        before = clear_batch_of(ledger, producer, topics, messages[:1], recording_conn=recording)
        beside = clear_batch_of(ledger, producer, topics, messages[1:], recording_conn=recording)
        before.complete()
        result = beside.complete()
    finally:
        recording.close()

    assert [result[k] for k in ("decided", "duplicates")] == [2, 1]
    assert ledger.conn.execute(
        "SELECT transaction_id, status, status_reason_code, available_balance FROM transactions "
        "WHERE transaction_id = ANY(%s) ORDER BY amount DESC, transaction_id = %s DESC", ([first, second, third], first)
    ).fetchall() == [(first, "rejected", "INSUFFICIENT_FUNDS", Decimal("40.00")),
                     (second, "cleared", "CLEARED", Decimal("100.00")),
                     (third, "cleared", "CLEARED", Decimal("40.00"))]


def test_clear_publishes_the_same_outcome_for_a_decision_and_for_its_redelivery(topics, producer, ledger):
    """clear publishes what it just decided from the decision; a redelivered message republishes what
    the ledger recorded. Subscribers must not be able to tell the two apart."""
    source, destination = ledger.accounts("1000.00", "0.00")
    ids = ledger.transactions((source, destination, "100.00"), (source, destination, "5000.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, i, amount, source, destination))
                                     for i, amount in zip(ids, ("100.00", "5000.00"))])
    messages = read_all(topics["in"], 2)

    first = clear_batch_of(ledger, producer, topics, messages).complete()
    again = clear_batch_of(ledger, producer, topics, messages).complete()

    assert [first[k] for k in ("decided", "published")] == [2, 2]
    assert [again[k] for k in ("decided", "duplicates", "published")] == [0, 2, 2]
    published = [decode_cleared(m.value()) for m in read_all(topics["out"], 4)]
    assert published[:2] == published[2:]
    assert ledger.statuses(ids) == {ids[0]: "cleared", ids[1]: "rejected"}


def test_a_batch_decided_before_the_previous_one_is_recorded_records_nothing_twice(topics, producer, ledger):
    """The operator decides the next batch while the previous one is recorded; a transaction in both is
    pending in both readings. The later recording finds it decided, reports a duplicate and publishes
    what the ledger recorded; the transaction has one transition."""
    source, destination = ledger.accounts("1000.00", "0.00")
    ids = ledger.transactions((source, destination, "100.00"), (source, destination, "200.00"))
    publish(producer, topics["in"], [(b"k", transaction_message(ledger, i, amount, source, destination))
                                     for i, amount in zip(ids, ("100.00", "200.00"))])
    messages = read_all(topics["in"], 2)
    recording = open_pg()
    try:
        earlier = clear_batch_of(ledger, producer, topics, messages, recording_conn=recording)
        later = clear_batch_of(ledger, producer, topics, messages[1:], recording_conn=recording)
        first, second = earlier.complete(), later.complete()
    finally:
        recording.close()

    assert [first[k] for k in ("decided", "published")] == [2, 2]
    assert [second[k] for k in ("decided", "duplicates", "published")] == [0, 1, 1]
    published = [decode_cleared(m.value()) for m in read_all(topics["out"], 3)]
    assert published[2] == published[1]
    assert [row[:2] for row in ledger.audit(ids[1])] == [("pending", "cleared")]


class _RecordingOperator(KafkaBatchOperator):
    """Applies nothing; its follow-ups record the batches they complete and fail on the third."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.followed_up: list[int] = []

    def process_batch(self, conn, producer, messages, context):
        def follow_up():
            if len(self.followed_up) == 2:
                raise RuntimeError("Redis is down")
            self.followed_up.append(len(messages))
            return {"followed_up": 1}
        return BatchResult({"applied": len(messages)}, (follow_up,))


def _drain_until_redis_is_down(operator_class, topics, producer, messages: int):
    """Publish `messages` messages and drain them in batches of 10 with `operator_class`, whose follow-ups
    fail at some point; the operator, and how many messages its group left uncommitted."""
    publish(producer, topics["in"], ((None, f"m{i}".encode()) for i in range(messages)))
    group_id = f"test-{uuid.uuid4().hex[:8]}"
    operator = operator_class(task_id="drain", topic=topics["in"], group_id=group_id,
                              dead_letter_topic=topics["dlq"], kafka_config_id=topology.KAFKA_CONN_ID,
                              postgres_conn_id=topology.POSTGRES_CONN_ID, batch_size=10, idle_timeout=1)
    with pytest.raises(RuntimeError, match="Redis is down"):
        operator.execute({})
    watcher = consumer_of(topics["in"], group_id)
    try:
        return operator, backlog(watcher, topics["in"])
    finally:
        watcher.close()


def test_a_batch_is_committed_only_once_its_follow_up_is_done(topics, producer):
    operator, uncommitted = _drain_until_redis_is_down(_RecordingOperator, topics, producer, 35)

    assert operator.followed_up == [10, 10]
    assert uncommitted == 15, "the batch whose follow-up failed, and the one after it, stay"


class _TwoStepOperator(KafkaBatchOperator):
    """Applies nothing; each batch has two follow-ups that record what they ran, and `failing` fails on
    the second batch; records which batches were abandoned."""

    def __init__(self, *, failing: str, **kwargs):
        super().__init__(**kwargs)
        self.failing = failing
        self.ran: list[tuple[str, int]] = []
        self.abandoned: list[int] = []

    def process_batch(self, conn, producer, messages, context):
        batch = int(messages[0].value().decode()[1:]) // 10

        def step(name):
            def run():
                if (name, batch) == (self.failing, 1):
                    raise RuntimeError("Redis is down")
                self.ran.append((name, batch))
                return {}
            return run
        return BatchResult({}, (step("first"), step("second")), abandon=lambda: self.abandoned.append(batch))


@pytest.mark.parametrize("failing", ["first", "second"])
def test_a_follow_up_runs_neither_past_a_failed_step_of_its_batch_nor_of_the_batch_before(topics, producer,
                                                                                         failing):
    operator, uncommitted = _drain_until_redis_is_down(
        partial(_TwoStepOperator, failing=failing), topics, producer, 40)

    assert ("first", 0) in operator.ran and ("second", 0) in operator.ran
    assert not any(step == "second" and batch >= 1 for step, batch in operator.ran), \
        "not past the failed batch's first step, nor past its own failure"
    assert (("first", 1) in operator.ran) == (failing == "second"), "the failed batch's first step ran before it"
    assert not any(step == failing and batch >= 2 for step, batch in operator.ran), "not past the failed batch"
    assert 0 not in operator.abandoned and 1 in operator.abandoned, "what was not completed was released"
    assert uncommitted == 30, "only the first batch is committed"


def test_a_finished_batch_is_committed_as_soon_as_the_topic_is_quiet(topics, producer):
    """Not only when the next batch comes or the task ends: the lag the sensor sees drops right away."""
    publish(producer, topics["in"], ((None, f"m{i}".encode()) for i in range(5)))
    operator = _RecordingOperator(task_id="drain", topic=topics["in"], group_id=f"test-{uuid.uuid4().hex[:8]}",
                                  dead_letter_topic=topics["dlq"], kafka_config_id=topology.KAFKA_CONN_ID,
                                  postgres_conn_id=topology.POSTGRES_CONN_ID, batch_size=10, idle_timeout=5)

    summary = operator.execute({})

    assert (summary["messages"], summary["followed_up"]) == (5, 1)
    assert summary["seconds"] < 2, "committed when the topic went quiet, not after the 5 s idle timeout"
    assert 0 < summary["cpu_seconds"] <= summary["seconds"] * (os.cpu_count() or 1), "CPU of the same window"
