"""Shared test settings.

The suite runs under `include/stack/with-env` (that is what `make test` does), so the AIRFLOW_CONN_*
connections, the LEDGERFLOW_* settings and the import path of the ledgerflow package come from the same
place as they do for Airflow itself.
"""

import os
from pathlib import Path

import pytest
from airflow.providers.postgres.hooks.postgres import PostgresHook

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def _running_under_stack_env():
    if "AIRFLOW_CONN_LEDGERFLOW_POSTGRES" not in os.environ:
        pytest.exit("run the tests with `make test` (or under include/stack/with-env)", returncode=2)


def open_pg():
    """A psycopg 3 connection to the pipeline database in autocommit mode, as the ledger functions expect."""
    conn = PostgresHook(postgres_conn_id="ledgerflow_postgres").get_conn()
    conn.autocommit = True
    return conn


@pytest.fixture
def pg():
    conn = open_pg()
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def pg_module():
    conn = open_pg()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def pipeline_paused():
    """Pause the pipeline's DAGs, fail their active runs and wait for their tasks to end: a running pipeline would
    take the tests' pending transactions and consume the pipeline's groups under them. `make run` unpauses
    produce, clear and settle again."""
    import httpx

    from include.airflow_control import AirflowApi

    try:
        api = AirflowApi()
    except httpx.ConnectError:
        return  # no api-server, so no task runs either: tasks reach Airflow through its execution API
    if still_running := api.stop_pipeline():
        # they would consume the pipeline's groups under the tests, and take their pending transactions
        pytest.exit(f"the pipeline's task instances {sorted(still_running)} still run after their runs failed",
                    returncode=2)
