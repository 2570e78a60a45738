"""SettleTransactionsOperator: settle clearance outcomes and project them to Redis."""

from airflow.providers.redis.hooks.redis import RedisHook
from airflow.sdk import Context

from ledgerflow.operators.batches import KafkaBatchOperator
from ledgerflow.operators.context import audit_context, postgres_connection
from ledgerflow.pipeline.settle import settle_batch


class SettleTransactionsOperator(KafkaBatchOperator):
    template_fields = (*KafkaBatchOperator.template_fields, "redis_conn_id")

    def __init__(self, *, redis_conn_id: str, **kwargs):
        super().__init__(**kwargs)
        self.redis_conn_id = redis_conn_id

    def execute(self, context: Context) -> dict:
        self.redis = RedisHook(redis_conn_id=self.redis_conn_id).get_conn()
        # the follow-ups write Redis records in a thread of their own, with a connection of their own
        self.projection_conn = postgres_connection(self.postgres_conn_id)
        try:
            return super().execute(context)
        finally:
            self.projection_conn.close()

    def process_batch(self, conn, producer, messages, context):
        return settle_batch(conn, self.redis, producer, messages, audit_context(context), self.dead_letter_topic,
                            projection_conn=self.projection_conn)
