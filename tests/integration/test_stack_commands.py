"""The local stack's commands are idempotent and fail clearly."""

import os
import subprocess

from airflow.providers.postgres.hooks.postgres import PostgresHook

from tests.conftest import REPO_ROOT

STACK = str(REPO_ROOT / "include" / "stack" / "stack.sh")


def run_stack(*args, env=None):
    return subprocess.run([STACK, *args], env=env or os.environ, capture_output=True, text=True, timeout=600)


def count(sql):
    return PostgresHook(postgres_conn_id="ledgerflow_postgres").get_first(sql)[0]


def test_applying_the_migrations_again_is_a_no_op():
    applied_before = count("SELECT count(*) FROM schema_migrations")

    result = run_stack("migrate")

    assert result.returncode == 0, result.stderr
    assert "schema is up to date" in result.stdout
    assert count("SELECT count(*) FROM schema_migrations") == applied_before


def test_bringing_the_services_up_again_keeps_their_data():
    accounts_before = count("SELECT count(*) FROM accounts")
    transactions_before = count("SELECT count(*) FROM transactions")

    result = run_stack("up", "--no-airflow")

    assert result.returncode == 0, result.stdout + result.stderr
    assert count("SELECT count(*) FROM accounts") == accounts_before
    assert count("SELECT count(*) FROM transactions") == transactions_before
    assert [line.split()[:2] for line in result.stdout.splitlines() if line.startswith(("postgres", "redis", "kafka"))] == [
        ["postgres", "up"], ["redis", "up"], ["kafka", "up"]]


def test_a_port_taken_by_another_process_stops_the_start_with_the_setting_to_change(tmp_path):
    # A second stack in its own state directory finds PostgreSQL's port held by the running one.
    env = {**os.environ, "LEDGERFLOW_STATE": str(tmp_path / "state")}

    result = run_stack("up", "--no-airflow", env=env)

    assert result.returncode != 0
    assert f"port {os.environ['LEDGERFLOW_PG_PORT']} (for postgres) is taken" in result.stderr
    assert "LEDGERFLOW_PG_PORT=<port>" in result.stderr
    assert not (tmp_path / "state").exists(), "nothing is installed or started before the ports are checked"
