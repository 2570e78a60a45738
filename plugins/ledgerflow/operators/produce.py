"""ProduceTransactionsOperator: publish a window's transactions to Kafka."""

from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import asdict
from datetime import datetime

from airflow.sdk import BaseOperator

from ledgerflow.core.config import DEFAULT_RULES_PATH, load_rules
from ledgerflow.operators.context import (batch_friendly_gc, peak_memory_mb, postgres_connection, quick_thread_switches,
                                        reset_peak_memory)
from ledgerflow.pipeline.produce import produce_window
from ledgerflow.store.kafka import LedgerflowProducerHook


# The run's data interval's end. A run triggered without a logical date (the trigger's default, in the UI and
# the CLI) has no data interval; its window ends when it was triggered.
RUN_WINDOW_END = "{{ data_interval_end if data_interval_end is defined else dag_run.run_after }}"


class ProduceTransactionsOperator(BaseOperator):
    """Publish the transactions created before `window_end` (by default RUN_WINDOW_END) that are pending and not
    yet published; with `redrive`, every transaction of [`window_start`, `window_end`) that is not terminal (for
    backfills).
    Each batch is recorded as published in `recording_connections` parts at once (see produce_window): with
    two, the stage ran 10% faster than with one (median of 3 runs against 3, alternating). Returns the counts
    (an XCom)."""

    template_fields: Sequence[str] = ("topic", "window_start", "window_end", "rules_path")

    def __init__(self, *, topic: str, window_end: str = RUN_WINDOW_END, window_start: str | None = None,
                 redrive: bool = False,
                 postgres_conn_id: str, kafka_config_id: str, rules_path: str = str(DEFAULT_RULES_PATH),
                 batch_size: int = 10000, recording_connections: int = 2, lock_timeout: float = 120.0,
                 **kwargs):
        super().__init__(**kwargs)
        if recording_connections < 1:
            raise ValueError(f"recording_connections must be at least 1, not {recording_connections}")
        self.topic = topic
        self.window_start = window_start
        self.window_end = window_end
        self.redrive = redrive
        self.postgres_conn_id = postgres_conn_id
        self.kafka_config_id = kafka_config_id
        self.rules_path = rules_path
        self.batch_size = batch_size
        self.recording_connections = recording_connections
        self.lock_timeout = lock_timeout  # seconds a statement may wait for a lock (see postgres_connection)

    def execute(self, context) -> dict:
        reset_peak_memory()
        rules = load_rules(self.rules_path)
        producer = LedgerflowProducerHook(kafka_config_id=self.kafka_config_id).get_producer()
        with ExitStack() as connections:
            reader, *writers = (
                connections.enter_context(closing(postgres_connection(self.postgres_conn_id, self.lock_timeout)))
                for _ in range(1 + self.recording_connections))
            with batch_friendly_gc(), quick_thread_switches():
                result = produce_window(
                    reader, writers, producer, self.topic, rules, end=datetime.fromisoformat(self.window_end),
                    start=datetime.fromisoformat(self.window_start) if self.window_start else None,
                    redrive=self.redrive, batch_size=self.batch_size)
        summary = {**asdict(result), "messages_per_second": round(result.published / max(result.seconds, 1e-6)),
                   "peak_memory_mb": peak_memory_mb()}
        self.log.info("%s to %s: %s", self.task_id, self.topic, summary)
        return summary
