"""The domain core imports no adapter: no Airflow, Kafka, Redis or database driver."""

import ast

import pytest

from tests.conftest import REPO_ROOT

CORE_FILES = sorted((REPO_ROOT / "plugins" / "ledgerflow" / "core").glob("*.py"))
FORBIDDEN = ("airflow", "confluent_kafka", "kafka", "redis", "psycopg", "psycopg2", "sqlalchemy", "ledgerflow.store")


@pytest.mark.parametrize("path", CORE_FILES, ids=[p.name for p in CORE_FILES])
def test_core_module_imports_no_adapter(path):
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    offending = {name for name in imported if name.split(".")[0] in FORBIDDEN or name.startswith(FORBIDDEN)}
    assert not offending, f"{path.name} imports {sorted(offending)}"
