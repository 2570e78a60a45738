"""Every DAG file imports cleanly, defines at least one DAG, and touches no network or database doing so.

Each file is parsed in a fresh interpreter whose sockets refuse to connect, so a DAG that opens a
connection at import time (a hook call, a query, a broker lookup) fails here instead of slowing every
parse of the dag-processor.
"""

import json
import subprocess
import sys

import pytest

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
