"""ClearTransactionsOperator: decide published transactions and publish the outcomes."""

from airflow.sdk import Context

from ledgerflow.core.config import DEFAULT_RULES_PATH, load_rules
from ledgerflow.operators.batches import KafkaBatchOperator
from ledgerflow.operators.context import audit_context, postgres_connection
from ledgerflow.pipeline.clear import clear_batch


class ClearTransactionsOperator(KafkaBatchOperator):
    template_fields = (*KafkaBatchOperator.template_fields, "outcome_topic", "rules_path")
    # deciding a batch only reads: it may go ahead of the two batches before it being recorded and published
    batches_in_flight = 2

    def __init__(self, *, outcome_topic: str, rules_path: str = str(DEFAULT_RULES_PATH), **kwargs):
        super().__init__(**kwargs)
        self.outcome_topic = outcome_topic
        self.rules_path = rules_path

    def execute(self, context: Context) -> dict:
        self.rules = load_rules(self.rules_path)
        # the follow-ups record decisions in a thread of their own, with a connection of their own
        self.recording_conn = postgres_connection(self.postgres_conn_id, self.lock_timeout)
        try:
            return super().execute(context)
        finally:
            self.recording_conn.close()

    def process_batch(self, conn, producer, messages, context):
        return clear_batch(conn, producer, messages, self.rules, audit_context(context),
                           self.outcome_topic, self.dead_letter_topic, recording_conn=self.recording_conn)
