"""Create the pipeline's Kafka topics through the Airflow Kafka provider; topics that exist are kept.

Run by `stack.sh up` and by docker compose's airflow-init: the broker has auto-create off, so a topic
exists only if the project made it, with the partition count the project chose.
"""

import argparse

from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--kafka-conn-id", default="ledgerflow_kafka")
    args = parser.parse_args()
    hook = KafkaAdminClientHook(kafka_config_id=args.kafka_conn_id)
    existing = hook.get_conn.list_topics(timeout=30).topics
    missing = [topic for topic in args.topics if topic not in existing]
    if missing:
        hook.create_topic([(topic, args.partitions, args.replication_factor) for topic in missing])
    print(f"==> Kafka topics ready: {' '.join(args.topics)}" + (f" (created {' '.join(missing)})" if missing else ""))


if __name__ == "__main__":
    main()
