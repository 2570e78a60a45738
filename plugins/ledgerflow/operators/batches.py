"""KafkaBatchOperator: the drain loop clear and settle share. One task run consumes batch after batch
until the topic has been idle for `idle_timeout` seconds or the time budget is spent, so Airflow's
per-run overhead is paid once per run, not once per batch, and a steady stream is served by a running
task instead of a new run per burst.

A batch is taken up in the task's thread (clear decides it, settle settles it); its follow-up (clear
records and publishes the decisions, settle writes the Redis records) runs in a background thread while
the next batch is taken up, so PostgreSQL and Python work at the same time. One follow-up runs at a
time, in batch order. A batch's offsets are committed only once its follow-up is done, and in order."""

import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from airflow.sdk import BaseOperator

from ledgerflow.operators.context import batch_friendly_gc, peak_memory_mb, postgres_connection, quick_thread_switches
from ledgerflow.pipeline import BatchResult
from ledgerflow.store.kafka import LedgerflowConsumerHook, LedgerflowProducerHook, commit, consume_batches


class KafkaBatchOperator(BaseOperator):
    template_fields: Sequence[str] = ("topic", "group_id", "dead_letter_topic")

    def __init__(self, *, topic: str, group_id: str, dead_letter_topic: str, kafka_config_id: str,
                 postgres_conn_id: str, batch_size: int = 10000, time_budget: float = 300.0,
                 idle_timeout: float = 30.0, **kwargs):
        super().__init__(**kwargs)
        self.topic = topic
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.kafka_config_id = kafka_config_id
        self.postgres_conn_id = postgres_conn_id
        self.batch_size = batch_size
        self.time_budget = time_budget
        self.idle_timeout = idle_timeout

    def process_batch(self, conn, producer, messages, context) -> BatchResult:
        """Take up one batch; return its counts so far and its follow-up."""
        raise NotImplementedError

    def execute(self, context) -> dict:
        conn = postgres_connection(self.postgres_conn_id)
        producer = LedgerflowProducerHook(kafka_config_id=self.kafka_config_id).get_producer()
        consumer = LedgerflowConsumerHook([self.topic], self.group_id, self.kafka_config_id).get_consumer()
        totals: Counter = Counter()
        first_message_at = last_commit_at = None
        in_flight: list[tuple[Future, list]] = []  # the batch whose follow-up runs, at most one

        def complete_in_flight() -> None:
            """Wait for the follow-up in flight, then commit its batch; raises what the follow-up raised,
            leaving that batch uncommitted. Called before the next follow-up starts and whenever the
            topic is quiet, so a finished batch is not left uncommitted while the task waits."""
            nonlocal last_commit_at
            if in_flight:
                follow_up, messages = in_flight.pop()
                totals.update(follow_up.result())
                commit(consumer, messages)
                last_commit_at = time.monotonic()

        try:
            with (batch_friendly_gc(), quick_thread_switches(),
                  ThreadPoolExecutor(max_workers=1, thread_name_prefix="follow-up") as background):
                try:
                    for messages in consume_batches(consumer, self.batch_size, self.time_budget, self.idle_timeout,
                                                    on_idle=complete_in_flight):
                        first_message_at = first_message_at or time.monotonic()
                        applied = self.process_batch(conn, producer, messages, context)
                        totals.update(applied.counts)
                        totals.update(batches=1, messages=len(messages))
                        complete_in_flight()
                        in_flight.append((background.submit(applied.follow_up), messages))
                    complete_in_flight()
                finally:
                    for follow_up, _ in in_flight:  # abandoned because the task failed: say how it ended
                        if (error := follow_up.exception()) is not None:
                            self.log.error("the follow-up of the last batch failed too: %r", error)
        finally:
            consumer.close()
            conn.close()
        summary = dict(totals)
        if first_message_at is not None:
            summary["seconds"] = round(last_commit_at - first_message_at, 3)
            summary["messages_per_second"] = round(totals["messages"] / max(summary["seconds"], 1e-6))
        summary["peak_memory_mb"] = peak_memory_mb()
        self.log.info("%s from %s: %s", self.task_id, self.topic, summary)
        return summary
