"""Create the pipeline's Kafka topics through the Airflow Kafka provider; topics that exist are kept.

Run by `stack.sh up` and by docker compose's airflow-init: the broker has auto-create off, so a topic
exists only if the project made it, with the partition count the project chose. With --recreate (`stack.sh
reset`), the topics that exist are deleted first, their messages and consumer groups' offsets with them.
"""

import argparse
import time

from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--replication-factor", type=int, default=1)
    parser.add_argument("--kafka-conn-id", default="ledgerflow_kafka")
    parser.add_argument("--recreate", action="store_true", help="delete the topics that exist first")
    args = parser.parse_args()
    hook = KafkaAdminClientHook(kafka_config_id=args.kafka_conn_id)
    # The port opens before the broker serves requests; after an unclean stop it first recovers its logs, which
    # took over 30 s with a million benchmark transactions on disk.
    existing = hook.get_conn.list_topics(timeout=120).topics
    if args.recreate and (doomed := [topic for topic in args.topics if topic in existing]):
        hook.delete_topic(doomed)
        # deletion completes in the background; a topic created before it has would be taken as existing
        deadline = time.monotonic() + 60
        while set(doomed) & set(existing := hook.get_conn.list_topics(timeout=30).topics):
            if time.monotonic() > deadline:
                raise SystemExit(f"topics still being deleted after 60 s: {' '.join(set(doomed) & set(existing))}")
            time.sleep(0.5)
    missing = [topic for topic in args.topics if topic not in existing]
    for topic in set(args.topics) & set(existing):
        if (partitions := len(existing[topic].partitions)) != args.partitions:
            print(f"warning: topic {topic} has {partitions} partitions, not the {args.partitions} asked for; "
                  "it is kept as it is (`make reset` recreates the topics, and drops their messages)")
    if missing:
        hook.create_topic([(topic, args.partitions, args.replication_factor) for topic in missing])
    print(f"==> Kafka topics ready: {' '.join(args.topics)}" + (f" (created {' '.join(missing)})" if missing else ""))


if __name__ == "__main__":
    main()
