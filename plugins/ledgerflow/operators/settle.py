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
        # A batch's transactions are locked on one connection while the batches in flight settle on
        # others; the Redis records are written in a thread of their own, with a connection of their own.
        self.spare_conns = [postgres_connection(self.postgres_conn_id, self.lock_timeout)
                            for _ in range(self.batches_in_flight)]
        self.batches_taken = 0
        self.projection_conn = postgres_connection(self.postgres_conn_id, self.lock_timeout)
        try:
            return super().execute(context)
        finally:
            self.projection_conn.close()
            for spare in self.spare_conns:
                spare.close()

    def process_batch(self, conn, producer, messages, context):
        # the loop takes up a batch only once all but `batches_in_flight` batches are done, so of one
        # more connection than that, taken in turn, this one is free
        connections = [conn, *self.spare_conns]
        settlement_conn = connections[self.batches_taken % len(connections)]
        self.batches_taken += 1
        return settle_batch(settlement_conn, self.redis, producer, messages, audit_context(context),
                            self.dead_letter_topic, projection_conn=self.projection_conn)
