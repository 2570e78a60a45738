"""Kafka on the provider's hooks: an idempotent producer that fails loudly, a consumer that never
commits on its own, and the consumer-group backlog that the sensor waits on."""

import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from airflow.providers.apache.kafka.hooks.consume import KafkaConsumerHook
from airflow.providers.apache.kafka.hooks.produce import KafkaProducerHook
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

# Idempotent, acknowledged by all in-sync replicas, batched for throughput.
PRODUCER_SETTINGS = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500000,
}
# Offsets are committed by the task only after its effects are durable. A group with no committed
# offset starts from the earliest message, so nothing published before the group first ran is skipped.
# The prefetch queue is capped at about two batches (librdkafka's default, 64 MiB, made a task's peak
# memory grow with the backlog it found). A task killed without closing its consumer keeps its partitions
# until its session times out, so the session (10 s) is shorter than the next run's first poll (15 s,
# consume_batches' first_wait). Heartbeats come from librdkafka's own thread, so a long batch does not let the
# session lapse (only a task that does not poll for max.poll.interval.ms, 300 s, loses its partitions). The
# price: a broker silent for over 10 s fails the running task (its batch is redelivered, nothing is lost or
# applied twice).
CONSUMER_SETTINGS = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "queued.max.messages.kbytes": 16384,
    "session.timeout.ms": 10000,
}


class DeliveryFailed(RuntimeError):
    """Some messages were not acknowledged by the broker."""


class LedgerflowProducerHook(KafkaProducerHook):
    def _get_client(self, config) -> Producer:
        return super()._get_client({**config, **PRODUCER_SETTINGS})


class LedgerflowConsumerHook(KafkaConsumerHook):
    def __init__(self, topics: Sequence[str], group_id: str, kafka_config_id: str) -> None:
        super().__init__(topics=topics, kafka_config_id=kafka_config_id)
        self.group_id = group_id

    def _get_client(self, config) -> Consumer:
        return super()._get_client({**config, **CONSUMER_SETTINGS, "group.id": self.group_id})


def publish(producer: Producer, topic: str, records: Iterable[tuple[str | bytes | None, bytes]],
            headers_of: Callable[[int], list[tuple[str, bytes]]] | None = None, flush_timeout: float = 60.0) -> int:
    """Produce (key, value) records and flush once; raise DeliveryFailed unless every one was
    acknowledged. `headers_of(i)` gives the headers of the i-th record, if any."""
    failures: list[str] = []

    def on_delivery(error, message):
        if error is not None:
            failures.append(f"{message.key()!r}: {error}")

    count = 0
    for key, value in records:
        headers = headers_of(count) if headers_of else None
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                producer.poll(0.05)
        count += 1
    unflushed = producer.flush(flush_timeout)
    if unflushed or failures:
        raise DeliveryFailed(f"{len(failures)} of {count} messages to {topic} failed, {unflushed} unacknowledged: "
                             f"{'; '.join(failures[:5])}")
    return count


def consume_batches(consumer: Consumer, max_messages: int, time_budget: float, idle_timeout: float,
                    first_wait: float = 15.0, next_wait: float = 0.2,
                    on_idle: Callable[[], None] | None = None,
                    on_first_message: Callable[[], None] | None = None,
                    keep_going: Callable[[], bool] = lambda: True) -> Iterator[list[Message]]:
    """Yield batches of up to `max_messages` until nothing has arrived for `idle_timeout` seconds,
    `time_budget` seconds are spent or `keep_going()`, asked before each wait, says no (if it says no at
    once, the first message polled is not yielded: uncommitted, it is delivered again). The first message
    may take a moment (the consumer joins its group).
    A batch is yielded when it is full or when nothing arrives within `next_wait`, so a backlog drains
    in full batches and a trickle is processed within `next_wait` of its arrival; waiting out short gaps
    between bursts (up to `idle_timeout`) spares the next burst a new task run. The caller commits after
    each batch's effects are durable; `on_idle` is called whenever a wait of `next_wait` brought nothing, and
    `on_first_message` once the first message has arrived, before the rest of its batch is fetched."""
    deadline = time.monotonic() + time_budget
    first = consumer.poll(first_wait)
    if first is None:
        return
    if on_first_message:
        on_first_message()
    pending = [first]
    last_message_at = time.monotonic()
    while time.monotonic() < deadline and keep_going():
        messages = pending + consumer.consume(num_messages=max_messages - len(pending), timeout=next_wait)
        pending = []
        if not messages:
            if on_idle:
                on_idle()
            if time.monotonic() - last_message_at >= idle_timeout:
                return
            continue
        last_message_at = time.monotonic()
        for message in messages:
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(error)
        yield [m for m in messages if m.error() is None]


def commit(consumer: Consumer, messages: Sequence[Message]) -> None:
    """Commit, synchronously, the positions after `messages` (a batch, in offset order per partition)."""
    last: dict[tuple[str, int], int] = {}
    for message in messages:
        last[message.topic(), message.partition()] = message.offset()
    if last:
        consumer.commit(offsets=[TopicPartition(topic, partition, offset + 1)
                                 for (topic, partition), offset in last.items()], asynchronous=False)


def backlog(consumer: Consumer, topic: str, timeout: float = 10.0) -> int:
    """Messages in `topic` that the consumer's group has not committed yet (from the earliest offset
    when the group has no commit). Reads committed offsets without joining the group."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
    if metadata.error is not None:
        raise KafkaException(metadata.error)
    partitions = [TopicPartition(topic, partition) for partition in metadata.partitions]
    total = 0
    for committed in _committed(consumer, partitions, timeout):
        low, high = consumer.get_watermark_offsets(committed, timeout=timeout, cached=False)
        # From the earliest where the consumer starts there (auto.offset.reset): no commit yet (-1001), retention
        # passed it, or it is past the end, as when a broker's unclean crash lost the tail of a log the group
        # had read. Counted from it, that last would be no backlog until the log grew past it. (librdkafka
        # resets such an offset to the earliest because commit() records no leader epoch; with one, it would
        # detect the truncation and start from the end of the epoch instead.)
        position = committed.offset if low <= committed.offset <= high else low
        total += high - position
    return total


def group_backlog(topic: str, group_id: str, kafka_config_id: str) -> int:
    """`backlog` for one look, with a consumer opened and closed for it."""
    consumer = LedgerflowConsumerHook([topic], group_id, kafka_config_id).get_conn
    try:
        return backlog(consumer, topic)
    finally:
        consumer.close()


# The producer refuses a message over its message.max.bytes (1,000,000 bytes: key, value and headers together,
# uncompressed), and a topic takes from any producer a record batch of up to its max.message.bytes (1,048,588 by
# default) compressed, so messages far larger uncompressed. So a message that cannot be processed may not fit in a
# dead letter as it came, nor with a reason that quotes it (msgspec's may). Such a dead letter carries the start of
# each, and a `truncated` header with their sizes as they came: otherwise its batch would fail on every retry, and
# the stage stand still behind it.
DEAD_LETTER_MAX_VALUE_BYTES = 512 * 1024
DEAD_LETTER_MAX_KEY_BYTES = 1024
DEAD_LETTER_MAX_REASON_BYTES = 4096


def dead_letter(producer: Producer, topic: str, rejects: Sequence[tuple[Message, str]]) -> int:
    """Send messages that cannot be processed to the dead-letter topic, unchanged but for the cuts above, with the
    reason and where they came from in headers, in the order they came (callers find them in more than one pass)."""
    if not rejects:
        return 0
    rejects = sorted(rejects, key=lambda reject: (reject[0].topic() or "", reject[0].partition(), reject[0].offset()))
    letters = [_dead_letter_of(message, reason) for message, reason in rejects]
    return publish(producer, topic, ((key, value) for key, value, _ in letters),
                   headers_of=lambda i: letters[i][2])


def _dead_letter_of(message: Message, reason: str) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    parts = {"key": (message.key(), DEAD_LETTER_MAX_KEY_BYTES),
             "value": (message.value() or b"", DEAD_LETTER_MAX_VALUE_BYTES),
             "reason": (reason.encode(), DEAD_LETTER_MAX_REASON_BYTES)}
    truncated = ", ".join(f"{name} {len(data)}" for name, (data, limit) in parts.items()
                          if data is not None and len(data) > limit)
    key, value, reason_bytes = (None if data is None else data[:limit] for data, limit in parts.values())
    headers = [("reason", reason_bytes.decode(errors="ignore").encode()),  # a cut may split a character
               ("source_topic", (message.topic() or "").encode()),
               ("source_partition", str(message.partition()).encode()),
               ("source_offset", str(message.offset()).encode())]
    return key, value, headers + ([("truncated", truncated.encode())] if truncated else [])


# What the broker answers while a group's coordinator is still being elected or loaded (a group's first
# use, a broker that just started). librdkafka does not flag NOT_COORDINATOR as retriable.
_COORDINATOR_NOT_READY = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                                    KafkaError.COORDINATOR_LOAD_IN_PROGRESS})


def _committed(consumer: Consumer, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
    """The group's committed offsets, retrying while the broker is still electing the group's
    coordinator, up to `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.committed(partitions, timeout=timeout)
        except KafkaException as error:
            retriable = error.args[0].retriable() or error.args[0].code() in _COORDINATOR_NOT_READY
            if not retriable or time.monotonic() >= deadline:
                raise
            time.sleep(0.2)
