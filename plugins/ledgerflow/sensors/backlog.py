"""Wait, in the triggerer, until a Kafka topic has messages for a consumer group."""

from collections.abc import Sequence

from airflow.sdk import BaseSensorOperator

from ledgerflow.store.kafka import group_backlog
from ledgerflow.triggers.backlog import KafkaBacklogTrigger


class KafkaBacklogSensor(BaseSensorOperator):
    """Succeeds at once when `topic` holds messages that `group_id` has not committed; otherwise defers
    to KafkaBacklogTrigger, which polls the backlog every `poll_interval` seconds. Consumes nothing.
    Returns the backlog it saw (an XCom).

    It waits for as long as the topic stays empty, as the provider's AwaitMessageSensor does: the run of a
    continuous DAG has nothing else to do. So the sensor settings `timeout`, `soft_fail`, `mode` and
    `poke_interval` do not apply."""

    template_fields: Sequence[str] = ("topic", "group_id", "kafka_config_id")

    def __init__(self, *, topic: str, group_id: str, kafka_config_id: str, poll_interval: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.topic = topic
        self.group_id = group_id
        self.kafka_config_id = kafka_config_id
        self.poll_interval = poll_interval

    def execute(self, context) -> int:
        waiting = group_backlog(self.topic, self.group_id, self.kafka_config_id)
        if waiting:
            return waiting
        self.defer(trigger=KafkaBacklogTrigger(self.topic, self.group_id, self.kafka_config_id, self.poll_interval),
                   method_name="execute_complete")

    def execute_complete(self, context, event: dict) -> int:
        return event["backlog"]
