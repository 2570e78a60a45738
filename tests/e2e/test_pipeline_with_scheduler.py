"""The pipeline driven for real: with the scheduler, dag-processor and triggerer running and the DAGs
unpaused, inserted transactions are settled (or rejected) within a bounded time, with no manual trigger."""

import time

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
