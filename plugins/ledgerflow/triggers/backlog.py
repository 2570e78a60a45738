"""A trigger that fires when a Kafka topic has messages its consumer group has not committed yet.

It reads the group's committed offsets and the partitions' high watermarks without joining the group
and without consuming, so the task that follows gets every message, and nothing is committed here.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor
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
        # Every call on the consumer, its closing included, runs on this one thread, in turn. The triggerer cancels
        # this coroutine when the task's run fails or is cleared, but not a call under way in a thread: closed from
        # another thread meanwhile, librdkafka's handle could be freed under it, and the triggerer crash.
        calls = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"backlog-{self.topic}")
        loop = asyncio.get_running_loop()
        opened = []  # the consumer, once opened

        def open_consumer():
            opened.append(hook.get_conn)
            return opened[0]

        def close_consumer():
            for consumer in opened:
                consumer.close()

        try:
            consumer = await loop.run_in_executor(calls, open_consumer)
            while True:
                waiting = await loop.run_in_executor(calls, backlog, consumer, self.topic)
                if waiting:
                    yield TriggerEvent({"topic": self.topic, "group_id": self.group_id, "backlog": waiting})
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            # after the call under way, if any (opening the consumer included); not awaited, so that a cancellation
            # does not wait for it
            calls.submit(close_consumer)
            calls.shutdown(wait=False)
