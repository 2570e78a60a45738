"""Every DAG file imports cleanly, defines at least one DAG, and touches no network or database doing so.

Each file is parsed in a fresh interpreter that refuses the network, so a DAG that opens a connection at
import time (a hook call, a query, a broker lookup) fails here instead of slowing every parse of the
dag-processor: its Python sockets refuse to connect, Kafka's clients (librdkafka opens its own sockets, and
connects lazily) refuse to be made, and the pipeline's connections point at a closed port, for libpq. Then
the DAGs as parsed are wired as the flow needs: each stage on the topics, group and dead letters of its place
in it, one active run each, on topics the stack creates.
"""

import json
import os
import subprocess
import sys

import pytest

from ledgerflow import topology
from tests.conftest import REPO_ROOT

DAG_FILES = sorted(path for path in (REPO_ROOT / "dags").glob("*.py") if path.name != "__init__.py")

PARSE_WITHOUT_NETWORK = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise RuntimeError(f"network access at DAG import time: {args!r}")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse

import confluent_kafka, confluent_kafka.admin

confluent_kafka.Consumer = confluent_kafka.Producer = confluent_kafka.admin.AdminClient = refuse

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"dag_ids": sorted(bag.dag_ids), "import_errors": bag.import_errors}))
"""


# The pipeline's connections, each to a port nothing listens on.
CLOSED_PORT_CONNECTIONS = {
    "AIRFLOW_CONN_LEDGERFLOW_POSTGRES": "postgresql://nobody:nothing@127.0.0.1:1/nowhere",
    "AIRFLOW_CONN_LEDGERFLOW_REDIS": "redis://:nothing@127.0.0.1:1",
    "AIRFLOW_CONN_LEDGERFLOW_KAFKA": "kafka://?bootstrap.servers=127.0.0.1%3A1",
}


def parse_without_network(dag_file) -> dict:
    result = subprocess.run([sys.executable, "-c", PARSE_WITHOUT_NETWORK, str(dag_file)],
                            capture_output=True, text=True, timeout=120, env={**os.environ, **CLOSED_PORT_CONNECTIONS})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[path.name for path in DAG_FILES])
def test_dag_file_imports_without_errors_or_network(dag_file):
    parsed = parse_without_network(dag_file)

    assert parsed["import_errors"] == {}
    assert parsed["dag_ids"], f"{dag_file.name} defines no DAG"


@pytest.mark.parametrize("touch", [
    "PostgresHook(postgres_conn_id=topology.POSTGRES_CONN_ID).get_conn()",
    "RedisHook(redis_conn_id=topology.REDIS_CONN_ID).get_conn().ping()",
    "LedgerflowConsumerHook([topology.TRANSACTIONS_TOPIC], 'g', topology.KAFKA_CONN_ID).get_conn",
    "LedgerflowProducerHook(kafka_config_id=topology.KAFKA_CONN_ID).get_producer()",
], ids=["postgres", "redis", "kafka consumer", "kafka producer"])
def test_a_dag_file_that_connects_at_import_time_fails_to_parse(tmp_path, touch):
    dag_file = tmp_path / "connects_at_import.py"
    dag_file.write_text(f"""
from datetime import datetime
from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.redis.hooks.redis import RedisHook
from airflow.sdk import DAG
from ledgerflow import topology
from ledgerflow.store.kafka import LedgerflowConsumerHook, LedgerflowProducerHook

{touch}
DAG(dag_id="connects_at_import", schedule=None, start_date=datetime(2026, 1, 1))
""")
    assert list(parse_without_network(dag_file)["import_errors"]) == [str(dag_file)]


def test_every_topic_the_pipeline_names_is_one_the_stack_creates():
    # Auto-creation is off on the broker: a topic the stack does not create stalls the stage at its first message.
    named = {value for name, value in vars(topology).items() if name.endswith("_TOPIC")}
    assert len(named) == 4
    assert named <= set(os.environ["LEDGERFLOW_TOPICS"].split())  # as the stack's settings give it


@pytest.fixture(scope="module")
def dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def test_each_stage_reads_and_writes_the_topics_and_group_of_its_place_in_the_flow(dags):
    clear, settle = dags["ledgerflow_clear"], dags["ledgerflow_settle"]
    for dag, topic, group, dead_letters in (
            (clear, topology.TRANSACTIONS_TOPIC, topology.CLEAR_GROUP, topology.TRANSACTIONS_DEAD_LETTER_TOPIC),
            (settle, topology.CLEARED_TOPIC, topology.SETTLE_GROUP, topology.CLEARED_DEAD_LETTER_TOPIC)):
        sensor, stage = dag.tasks  # the sensor waits for exactly the backlog its stage then drains
        assert sensor.downstream_task_ids == {stage.task_id}
        assert (sensor.topic, sensor.group_id) == (stage.topic, stage.group_id) == (topic, group)
        assert stage.dead_letter_topic == dead_letters
    assert clear.tasks[1].outcome_topic == topology.CLEARED_TOPIC
    assert settle.tasks[1].redis_conn_id == topology.REDIS_CONN_ID
    for dag_id in ("ledgerflow_produce", "ledgerflow_produce_window"):
        [produce] = dags[dag_id].tasks
        assert produce.topic == topology.TRANSACTIONS_TOPIC
    assert dags["ledgerflow_produce_window"].tasks[0].redrive


def test_each_stage_has_one_active_run_so_one_consumer_keeps_its_order(dags):
    assert {dag_id: dag.max_active_runs for dag_id, dag in dags.items()} == {
        "ledgerflow_produce": 1, "ledgerflow_produce_window": 1, "ledgerflow_clear": 1, "ledgerflow_settle": 1}
    assert dags["ledgerflow_clear"].schedule == dags["ledgerflow_settle"].schedule == "@continuous"
    assert all(not dag.catchup for dag in dags.values())
