"""The domain core imports no adapter: no Airflow, Kafka, Redis or database driver, directly or through another
module (the ledgerflow package's adapters included)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

CORE_MODULES = sorted(f"ledgerflow.core.{path.stem}"
                      for path in (REPO_ROOT / "plugins" / "ledgerflow" / "core").glob("*.py"))
FORBIDDEN = ("airflow", "confluent_kafka", "kafka", "redis", "hiredis", "psycopg", "psycopg2", "sqlalchemy",
             "ledgerflow.store", "ledgerflow.pipeline", "ledgerflow.operators", "ledgerflow.sensors",
             "ledgerflow.triggers", "ledgerflow.executors")

# In a fresh interpreter, so that what the module imports, however indirectly, is all that is loaded.
MODULES_LOADED_BY_IMPORTING = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by_importing(module: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", MODULES_LOADED_BY_IMPORTING, module],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def forbidden(modules: list[str]) -> list[str]:
    return [name for name in modules if any(name == root or name.startswith(f"{root}.") for root in FORBIDDEN)]


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_loads_no_adapter(module):
    assert forbidden(loaded_by_importing(module)) == []


def test_the_check_sees_an_adapter_loaded_through_another_module():
    assert "confluent_kafka" in forbidden(loaded_by_importing("ledgerflow.store.kafka"))
