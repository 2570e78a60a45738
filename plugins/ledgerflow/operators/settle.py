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
        # A batch's transactions are locked on one connection while the previous batch settles on the
        # other; the Redis records are written in a thread of their own, with a connection of their own.
        self.spare_conn = postgres_connection(self.postgres_conn_id)
        self.batches_taken = 0
        self.projection_conn = postgres_connection(self.postgres_conn_id)
        try:
            return super().execute(context)
        finally:
            self.projection_conn.close()
            self.spare_conn.close()

    def process_batch(self, conn, producer, messages, context):
        # with one batch in flight, the loop takes up a batch only once the batch before the previous one
        # is done, so of two connections taken in turn, this one is free
        settlement_conn = (conn, self.spare_conn)[self.batches_taken % 2]
        self.batches_taken += 1
        return settle_batch(settlement_conn, self.redis, producer, messages, audit_context(context),
                            self.dead_letter_topic, projection_conn=self.projection_conn)
