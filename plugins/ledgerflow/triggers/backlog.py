"""A trigger that fires when a Kafka topic has messages its consumer group has not committed yet.

It reads the group's committed offsets and the partitions' high watermarks without joining the group
and without consuming, so the task that follows gets every message, and nothing is committed here.
"""

import asyncio
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from ledgerflow.store.kafka import LedgerflowConsumerHook, backlog


class KafkaBacklogTrigger(BaseTrigger):
    def __init__(self, topic: str, group_id: str, kafka_config_id: str, poll_interval: float = 1.0) -> None:
        super().__init__()
        self.topic = topic
        self.group_id = group_id
        self.kafka_config_id = kafka_config_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("ledgerflow.triggers.backlog.KafkaBacklogTrigger",
                {"topic": self.topic, "group_id": self.group_id, "kafka_config_id": self.kafka_config_id,
                 "poll_interval": self.poll_interval})

    async def run(self):
        hook = LedgerflowConsumerHook([self.topic], self.group_id, self.kafka_config_id)
        consumer = await asyncio.to_thread(lambda: hook.get_conn)
        try:
            while True:
                waiting = await asyncio.to_thread(backlog, consumer, self.topic)
                if waiting:
                    yield TriggerEvent({"topic": self.topic, "group_id": self.group_id, "backlog": waiting})
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await asyncio.to_thread(consumer.close)
