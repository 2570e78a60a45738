"""Every DAG file imports cleanly, defines at least one DAG, and touches no network or database doing so.

Each file is parsed in a fresh interpreter whose sockets refuse to connect, so a DAG that opens a
connection at import time (a hook call, a query, a broker lookup) fails here instead of slowing every
parse of the dag-processor. Then the DAGs as parsed are wired as the flow needs: each stage on the topics,
group and dead letters of its place in it, one active run each, on topics the stack creates.
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

from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"dag_ids": sorted(bag.dag_ids), "import_errors": bag.import_errors}))
"""


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[path.name for path in DAG_FILES])
def test_dag_file_imports_without_errors_or_network(dag_file):
    result = subprocess.run([sys.executable, "-c", PARSE_WITHOUT_NETWORK, str(dag_file)],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    assert parsed["import_errors"] == {}
    assert parsed["dag_ids"], f"{dag_file.name} defines no DAG"


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
