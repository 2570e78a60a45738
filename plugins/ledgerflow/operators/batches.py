"""KafkaBatchOperator: the drain loop clear and settle share. One task run consumes batch after batch
until the topic has been idle for `idle_timeout` seconds or the time budget is spent, so Airflow's
per-run overhead is paid once per run, not once per batch, and a steady stream is served by a running
task instead of a new run per burst.

A batch is taken up in the task's thread (clear decides it, settle locks its transactions); its
follow-ups (clear records and publishes the decisions; settle settles, then writes the Redis records)
run in background threads, one thread per follow-up, while the next batch is taken up, so PostgreSQL,
Redis and Python work at the same time. Each follow-up thread runs its batches in order, and a
follow-up runs only once the batch's earlier follow-up and the previous batch's same follow-up have
succeeded. A batch's offsets are committed only once all its follow-ups are done, and in order.

Batch N + batches_in_flight + 1 is taken up only once batch N is done, so a step can take
batches_in_flight + 1 connections in turn: the task's thread never uses one a follow-up still uses.

The drain also stops, as if the topic were idle, once the process that supervises the task (its parent;
under `airflow dags test`, the process that runs the DAG) is gone, killed say: Airflow fails the task when
its heartbeats stop, and its retry takes the topic up. Running on unseen beside the retry, for up to the
time budget, would only split the topic's partitions between the two. It stops at its next wait for
messages, once its current batch is taken up. Its logs went to the supervisor: they, and its result, are
lost with it. (With `run_as_user`, the parent is sudo, which outlives the supervisor: the drain runs on.)

It stops the same way when Airflow asks the task to (on_kill: SIGTERM to the task's process, which a worker
passes on when it gets one, as the scheduler's process group does in `make stop`): the task commits what it took
up and succeeds, usually in seconds, where it would drain on for the rest of its time budget."""

import os
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import Future

from airflow.sdk import BaseOperator

from ledgerflow.operators.context import (batch_friendly_gc, peak_memory_mb, postgres_connection, quick_thread_switches,
                                        reset_peak_memory)
from ledgerflow.pipeline import BatchResult
from ledgerflow.pipeline.follow_ups import FollowUpThreads, log_other_failures
from ledgerflow.store.kafka import LedgerflowConsumerHook, LedgerflowProducerHook, commit, consume_batches


class KafkaBatchOperator(BaseOperator):
    template_fields: Sequence[str] = ("topic", "group_id", "dead_letter_topic")
    # how many batches' follow-ups may still run while the task's thread takes up the next batch
    batches_in_flight = 1

    def __init__(self, *, topic: str, group_id: str, dead_letter_topic: str, kafka_config_id: str,
                 postgres_conn_id: str, batch_size: int = 10000, time_budget: float = 300.0,
                 idle_timeout: float = 30.0, lock_timeout: float = 120.0, **kwargs):
        super().__init__(**kwargs)
        self.topic = topic
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.kafka_config_id = kafka_config_id
        self.postgres_conn_id = postgres_conn_id
        self.batch_size = batch_size
        self.time_budget = time_budget
        self.idle_timeout = idle_timeout
        self.lock_timeout = lock_timeout  # seconds a statement may wait for a lock (see postgres_connection)
        self.asked_to_stop = False  # by on_kill

    def process_batch(self, conn, producer, messages, context) -> BatchResult:
        """Take up one batch; return its counts so far and its follow-ups."""
        raise NotImplementedError

    def on_kill(self) -> None:
        # Called in the task's thread, from its SIGTERM handler: only a flag, which the drain reads before each wait.
        self.asked_to_stop = True

    def execute(self, context) -> dict:
        reset_peak_memory()
        supervisor = os.getppid()
        conn = postgres_connection(self.postgres_conn_id, self.lock_timeout)
        producer = LedgerflowProducerHook(kafka_config_id=self.kafka_config_id).get_producer()
        consumer = LedgerflowConsumerHook([self.topic], self.group_id, self.kafka_config_id).get_consumer()
        totals: Counter = Counter()
        first_message_at = last_commit_at = None
        # the process's CPU time (all its threads) at the same moments, for the benchmark's CPU per transaction
        first_message_cpu = last_commit_cpu = 0.0
        in_flight: deque[tuple[list[Future], list, BatchResult]] = deque()  # batches not done, oldest first

        def complete_oldest() -> None:
            """Wait for the oldest batch's follow-ups, then commit it; raises what a follow-up raised,
            leaving that batch in flight, uncommitted, for the clean-up below."""
            nonlocal last_commit_at, last_commit_cpu
            follow_ups, messages, _ = in_flight[0]
            for follow_up in follow_ups:
                totals.update(follow_up.result())
            in_flight.popleft()
            commit(consumer, messages)
            last_commit_at, last_commit_cpu = time.monotonic(), time.process_time()

        def first_message_arrived() -> None:
            nonlocal first_message_at, first_message_cpu
            first_message_at, first_message_cpu = time.monotonic(), time.process_time()

        def keep_going() -> bool:
            return not self.asked_to_stop and os.getppid() == supervisor

        def complete_all() -> None:
            """Called whenever the topic is quiet, so a finished batch is not left uncommitted while the
            task waits."""
            while in_flight:
                complete_oldest()

        try:
            with batch_friendly_gc(), quick_thread_switches(), FollowUpThreads() as follow_up_threads:
                try:
                    for messages in consume_batches(consumer, self.batch_size, self.time_budget, self.idle_timeout,
                                                    on_idle=complete_all, on_first_message=first_message_arrived,
                                                    keep_going=keep_going):
                        applied = self.process_batch(conn, producer, messages, context)
                        totals.update(applied.counts)
                        totals.update(batches=1, messages=len(messages))
                        in_flight.append((follow_up_threads.start(applied.follow_ups), messages, applied))
                        while len(in_flight) > self.batches_in_flight:
                            complete_oldest()
                    complete_all()
                finally:
                    # The task failed: what has not started will not, what runs ends (its batch stays
                    # uncommitted and is redelivered), and what the task's thread took up is released.
                    failure = sys.exception()
                    for follow_ups, _, _ in in_flight:
                        for follow_up in follow_ups:
                            follow_up.cancel()
                    for follow_ups, _, applied in in_flight:
                        try:
                            log_other_failures(follow_ups, failure, self.log)
                        finally:
                            applied.abandon()  # once its follow-ups are over: they may use what it releases
        finally:
            consumer.close()
            conn.close()
        summary = dict(totals)
        if last_commit_at is not None:  # a batch was committed (the first message alone may not be)
            summary["seconds"] = round(last_commit_at - first_message_at, 3)
            summary["cpu_seconds"] = round(last_commit_cpu - first_message_cpu, 3)
            summary["messages_per_second"] = round(totals["messages"] / max(summary["seconds"], 1e-6))
        summary["peak_memory_mb"] = peak_memory_mb()
        if os.getppid() == supervisor:  # else the log's socket is closed: logging would raise BrokenPipeError
            self.log.info("%s from %s: %s", self.task_id, self.topic, summary)
        return summary
