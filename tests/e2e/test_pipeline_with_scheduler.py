"""The pipeline driven for real: with the scheduler, dag-processor and triggerer running and the DAGs
unpaused, inserted transactions are settled (or rejected) within a bounded time, with no manual trigger; and
a manual trigger, as the UI makes it, runs."""

import time
from datetime import datetime, timedelta

import pytest

from include.bench.fault_drill import kill_the_first_to_take_a_task, processes_to_kill
from tests.e2e.conftest import Scenario

BOUND_SECONDS = 120
DAGS = ["ledgerflow_produce", "ledgerflow_clear", "ledgerflow_settle"]


def test_inserted_transactions_reach_a_terminal_status_without_a_manual_trigger(pg, airflow_api):
    scenario = Scenario(pg)
    try:
        for dag_id in DAGS:
            airflow_api.set_paused(dag_id, False)
        scenario.create()
        started = time.monotonic()
        while time.monotonic() - started < BOUND_SECONDS:
            statuses = scenario.statuses()
            if set(statuses.values()) <= {"settled", "rejected"}:
                break
            time.sleep(1)
        elapsed = time.monotonic() - started
    finally:
        airflow_api.stop_pipeline()

    assert statuses == {"T1": "settled", "T2": "settled", "T3": "settled", "T4": "rejected"}, (
        f"after {elapsed:.0f}s: {statuses}")
    assert scenario.reconciliation_gaps() == []
    print(f"terminal {elapsed:.1f}s after the insert")


@pytest.mark.parametrize(("dag_id", "task_id", "hours_back"), [
    ("ledgerflow_produce", "publish_new_transactions", None),
    ("ledgerflow_produce_window", "redrive_window", 1),
])
def test_a_run_triggered_without_a_logical_date_takes_the_window_before_the_trigger(
        airflow_api, dag_id, task_id, hours_back):
    """The trigger's default, in the UI as with `airflow dags trigger`, is a run with no logical date and so no
    data interval: produce then takes what was created before the trigger, the window DAG re-drives the hour
    before it."""
    try:
        airflow_api.set_paused(dag_id, False)
        run_id = airflow_api.trigger(dag_id)
        started = time.monotonic()
        while (run := airflow_api.run(dag_id, run_id))["state"] not in ("success", "failed"):
            assert time.monotonic() - started < BOUND_SECONDS, f"{run_id} still {run['state']}"
            time.sleep(1)
    finally:
        airflow_api.stop_pipeline()

    assert (run["state"], run["logical_date"]) == ("success", None)
    fields = airflow_api.rendered_fields(dag_id, run_id, task_id)
    triggered = datetime.fromisoformat(run["run_after"])
    assert datetime.fromisoformat(fields["window_end"]) == triggered
    window_start = fields["window_start"] and datetime.fromisoformat(fields["window_start"])
    assert window_start == (None if hours_back is None else triggered - timedelta(hours=hours_back))


def test_a_task_whose_worker_was_killed_before_starting_it_is_scheduled_again_and_runs(airflow_api):
    """The worker that takes produce's next task is killed before it starts it: no process is left to start or fail
    the task, and only the scheduler's task_queued_timeout, with an executor that can revoke, takes it up again."""
    idle_workers = processes_to_kill("kill worker taking a task")
    try:
        airflow_api.set_paused("ledgerflow_produce", False)
        assert (taken := kill_the_first_to_take_a_task(idle_workers, seconds=60)), "a worker took produce's task"
        time.sleep(2)
        [run] = airflow_api.active_runs("ledgerflow_produce")
        [task] = airflow_api.task_instances("ledgerflow_produce", run["dag_run_id"])
        assert (task["id"], task["state"]) == (taken[1], "queued"), "killed before it started the task"
        started = time.monotonic()
        while (run := airflow_api.run("ledgerflow_produce", run["dag_run_id"]))["state"] not in ("success", "failed"):
            assert time.monotonic() - started < 150, f"{run['dag_run_id']} still {run['state']}"
            time.sleep(1)
    finally:
        airflow_api.stop_pipeline()

    assert run["state"] == "success"
    print(f"the stuck run succeeded {time.monotonic() - started:.0f} s after the kill")
