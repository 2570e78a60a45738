"""The pipeline driven for real: with the scheduler, dag-processor and triggerer running and the DAGs
unpaused, inserted transactions are settled (or rejected) within a bounded time, with no manual trigger; and
a manual trigger, as the UI makes it, runs."""

import contextlib
import random
import re
import subprocess
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from include.airflow_control import AirflowApi
from include.bench.fault_drill import kill_the_first_to_take_a_task, processes_to_kill
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import Scenario

BOUND_SECONDS = 120
DAGS = ["ledgerflow_produce", "ledgerflow_clear", "ledgerflow_settle"]


def finished_run(airflow_api, dag_id: str, run_id: str, seconds: float = BOUND_SECONDS) -> dict:
    """The run once it has succeeded or failed; TimeoutError if it has not within `seconds`."""
    airflow_api.finished_state(dag_id, run_id, seconds)
    return airflow_api.run(dag_id, run_id)


def statuses_once_terminal(scenario: Scenario, seconds: float = BOUND_SECONDS) -> tuple[dict[str, str], float]:
    """The scenario's statuses once every transfer is settled or rejected (or after `seconds`), and how long that
    took."""
    started = time.monotonic()
    while (not set((statuses := scenario.statuses()).values()) <= {"settled", "rejected"}
           and time.monotonic() - started < seconds):
        time.sleep(1)
    return statuses, time.monotonic() - started


def test_inserted_transactions_reach_a_terminal_status_without_a_manual_trigger(pg, airflow_api, redis_client):
    scenario = Scenario(pg)
    try:
        for dag_id in DAGS:
            airflow_api.set_paused(dag_id, False)
        scenario.create()
        statuses, elapsed = statuses_once_terminal(scenario)
    finally:
        airflow_api.stop_pipeline()

    assert statuses == Scenario.SETTLED_STATUSES, f"after {elapsed:.0f}s: {statuses}"
    assert scenario.balances() == Scenario.SETTLED_BALANCES
    assert scenario.reconciliation_gaps() == []
    assert {t: scenario.audit_chain(t) for t in Scenario.TRANSFERS} == Scenario.SETTLED_AUDIT_CHAINS
    # each change names a scheduled run of its stage (`airflow dags test` and a trigger make manual__ runs)
    assert set(pg.execute("SELECT dag_id, task_id, run_id ~ '^scheduled__' FROM transaction_audit "
                          "WHERE transaction_id LIKE %s", (f"{scenario.prefix}-%",)).fetchall()) == {
        ("ledgerflow_clear", "clear_transactions", True), ("ledgerflow_settle", "settle_transactions", True)}
    assert redis_client.hget(f"settlement:{scenario.id('T2')}", "from_balance_after") == b"72499.50"
    assert redis_client.hget(f"rejected:{scenario.id('T4')}", "reason_code") == b"INSUFFICIENT_FUNDS"
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
        run = finished_run(airflow_api, dag_id, run_id)
    finally:
        airflow_api.stop_pipeline()

    assert (run["state"], run["logical_date"]) == ("success", None)
    fields = airflow_api.rendered_fields(dag_id, run_id, task_id)
    triggered = datetime.fromisoformat(run["run_after"])
    assert datetime.fromisoformat(fields["window_end"]) == triggered
    window_start = fields["window_start"] and datetime.fromisoformat(fields["window_start"])
    assert window_start == (None if hours_back is None else triggered - timedelta(hours=hours_back))


def test_a_window_run_triggered_with_a_logical_date_re_drives_the_hour_that_starts_there(airflow_api):
    """As a backfill run of that date does. Airflow gives such a manual run the interval that ends at its logical
    date; a backfill of the date later runs that same run again, so taking its interval would re-drive the hour
    before twice and the hour itself never."""
    hour = datetime(2026, 1, 2, 10, tzinfo=UTC)  # long past: the run finds nothing to re-drive
    run_id = airflow_api.trigger("ledgerflow_produce_window", logical_date=hour)
    try:
        airflow_api.set_paused("ledgerflow_produce_window", False)
        run = finished_run(airflow_api, "ledgerflow_produce_window", run_id)
        fields = airflow_api.rendered_fields("ledgerflow_produce_window", run_id, "redrive_window")
    finally:
        airflow_api.stop_pipeline()
        # The date's one run: a later trigger of it would be refused, and a backfill of it would run this again.
        # Not raising: an error here would hide the test's own.
        with contextlib.suppress(httpx.HTTPError):
            airflow_api.delete_run("ledgerflow_produce_window", run_id)

    assert (run["state"], datetime.fromisoformat(run["data_interval_end"])) == ("success", hour)
    assert (datetime.fromisoformat(fields["window_start"]), datetime.fromisoformat(fields["window_end"])) == (
        hour, hour + timedelta(hours=1))


def test_a_day_long_backfill_is_24_window_runs_and_produce_refuses_one():
    day = ["--from-date", "2026-11-24T00:00:00+00:00", "--to-date", "2026-11-24T23:00:00+00:00", "--dry-run"]

    window = subprocess.run(["airflow", "backfill", "create", "--dag-id", "ledgerflow_produce_window",
                             "--reprocess-behavior", "completed", "--max-active-runs", "1", *day],
                            capture_output=True, text=True, timeout=120)
    produce = subprocess.run(["airflow", "backfill", "create", "--dag-id", "ledgerflow_produce", *day],
                             capture_output=True, text=True, timeout=120)

    assert window.returncode == 0, window.stderr[-2000:]
    runs = window.stdout.partition("Runs to be attempted:")[2]  # the parameters before it name both dates too
    assert re.findall(r"^\| (2026-11-24 \d\d):00:00\+00:00 ", runs, re.MULTILINE) == [
        f"2026-11-24 {hour:02d}" for hour in range(24)], window.stdout[-2000:]
    assert produce.returncode != 0
    assert "does not allow backfill runs" in produce.stdout + produce.stderr, produce.stderr[-2000:]


def test_a_backfill_as_the_readme_gives_it_re_drives_its_hours_one_at_a_time_and_what_was_lost_settles_once(
        pg, airflow_api):
    """After a lost topic: T1 was published and its message lost, T3 cleared and its outcome lost. A three-hour
    backfill with the README's command re-drives both, each hour in a run of its own, one after the other."""
    day = datetime(2003, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(365))  # hours no other test uses
    scenario = Scenario(pg)
    scenario.create({"T1": ("A1", "A2", "1000.00"), "T3": ("A5", "A6", "750.25")})
    pg.execute("UPDATE transactions SET published_at = now(), created_at = %s WHERE transaction_id = %s",
               (day + timedelta(minutes=10), scenario.id("T1")))
    pg.execute("UPDATE transactions SET status = 'cleared', status_reason_code = 'CLEARED', risk_score = 0, "
               "published_at = now(), created_at = %s WHERE transaction_id = %s",
               (day + timedelta(hours=2, minutes=59), scenario.id("T3")))
    hours = [day + timedelta(hours=h) for h in range(3)]
    backfill = subprocess.run(
        ["airflow", "backfill", "create", "--dag-id", "ledgerflow_produce_window", "--reprocess-behavior", "completed",
         "--max-active-runs", "1", "--from-date", hours[0].isoformat(), "--to-date", hours[-1].isoformat()],
        capture_output=True, text=True, timeout=120)
    assert backfill.returncode == 0, backfill.stderr[-2000:]
    try:
        for dag_id in (*DAGS[1:], "ledgerflow_produce_window"):
            airflow_api.set_paused(dag_id, False)
        statuses, elapsed = statuses_once_terminal(scenario)
        listed = airflow_api.client.get("/dags/ledgerflow_produce_window/dagRuns", params={
            "logical_date_gte": hours[0].isoformat(), "logical_date_lte": hours[-1].isoformat()}).json()["dag_runs"]
        run_ids = {datetime.fromisoformat(run["logical_date"]): run["dag_run_id"] for run in listed}
        runs = {hour: finished_run(airflow_api, "ledgerflow_produce_window", run_ids[hour]) for hour in hours}
        # (their rendered fields are gone: Airflow keeps them for the 30 latest logical dates only)
        published = [airflow_api.xcom("ledgerflow_produce_window", run["dag_run_id"], "redrive_window")["published"]
                     for run in runs.values()]
    finally:
        airflow_api.stop_pipeline()
        # Airflow marks a backfill done a scheduler loop after its last run, and refuses another meanwhile
        for active in airflow_api.client.get("/backfills", params={
                "dag_id": "ledgerflow_produce_window", "order_by": "-id"}).json()["backfills"]:
            if active["completed_at"] is None:
                airflow_api.client.put(f"/backfills/{active['id']}/cancel")

    assert statuses == {"T1": "settled", "T3": "settled"}, f"after {elapsed:.0f}s: {statuses}"
    assert scenario.audit_chain("T1") == Scenario.SETTLED_AUDIT_CHAINS["T1"]
    assert [row[:2] for row in scenario.audit_chain("T3")] == [("pending", "cleared"), ("cleared", "settled")]
    assert scenario.reconciliation_gaps() == []
    assert [(run["state"], run["run_type"]) for run in runs.values()] == [("success", "backfill")] * 3
    assert published == [1, 0, 1], "each run re-drives the hour that starts at its logical date: T1's, none, T3's"
    ends_and_next_starts = [
        (datetime.fromisoformat(runs[earlier]["end_date"]), datetime.fromisoformat(runs[later]["start_date"]))
        for earlier, later in zip(hours, hours[1:])]
    assert all(end <= start for end, start in ends_and_next_starts), f"runs overlapped: {ends_and_next_starts}"


def test_a_refused_login_to_the_api_says_so(monkeypatch):
    monkeypatch.setenv("LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD", "not-the-password")
    with pytest.raises(httpx.HTTPStatusError, match="401"):
        AirflowApi()


def test_the_active_runs_stop_pipeline_fails_are_all_of_them_past_a_page_as_a_week_long_backfill_queues(
        airflow_api):
    """A backfill queues every run at once (a week's is 168); the API lists at most 100 at a time. The DAG is
    paused (the suite pauses the pipeline), so the runs stay queued until the backfill is cancelled."""
    backfill = airflow_api.client.post("/backfills", json={
        "dag_id": "ledgerflow_produce_window", "from_date": "2002-01-01T00:00:00Z", "to_date": "2002-01-06T00:00:00Z",
        "reprocess_behavior": "completed", "max_active_runs": 1})
    backfill.raise_for_status()
    try:
        active = [run for run in airflow_api.active_runs("ledgerflow_produce_window")
                  if run["logical_date"].startswith("2002-01-0")]
    finally:
        airflow_api.client.put(f"/backfills/{backfill.json()['id']}/cancel").raise_for_status()

    assert len({run["dag_run_id"] for run in active}) == len(active) == 5 * 24 + 1


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
        run = finished_run(airflow_api, "ledgerflow_produce", run["dag_run_id"], seconds=150)
    finally:
        airflow_api.stop_pipeline()

    assert run["state"] == "success"
    print(f"the stuck run succeeded {time.monotonic() - started:.0f} s after the kill")


def test_make_redrive_runs_the_hours_of_approved_reviews_one_after_the_other_and_they_settle(pg, airflow_api):
    """An approved review waits for a re-drive of the hour it was created in, here an hour the window DAG has run
    before (Airflow keeps one run per logical date) and the hour before it, which has no run: `make redrive` runs
    the earlier hour, then the later one again once that has ended, and the transfers settle. (Airflow alone
    would start the cleared run first.)"""
    # long past, so its first run finds nothing; years back, as an adopter's own data may be (a window run of an hour
    # before the DAG's start date would succeed without a task)
    hour = datetime(2001, 1, 1, 1, tzinfo=UTC) + timedelta(hours=random.randrange(364 * 24))
    hour_before = hour - timedelta(hours=1)
    scenario = Scenario(pg)
    earlier_run = airflow_api.run_again("ledgerflow_produce_window", hour)  # a run left by an earlier try is cleared
    run_ids = [earlier_run]
    try:
        airflow_api.set_paused("ledgerflow_produce_window", False)
        assert finished_run(airflow_api, "ledgerflow_produce_window", earlier_run)["state"] == "success"
        scenario.create({"T0": ("A1", "A3", "500.00"), "T1": ("A1", "A2", "1000.00")})
        for transfer, created_at in (("T0", hour_before + timedelta(minutes=30)), ("T1", hour + timedelta(minutes=30))):
            for status, reason in (("requires_manual_review", "MANUAL_REVIEW_RISK_SCORE"),
                                   ("cleared", "REVIEW_APPROVED")):
                pg.execute("UPDATE transactions SET status = %s, status_reason_code = %s WHERE transaction_id = %s",
                           (status, reason, scenario.id(transfer)))
            pg.execute("UPDATE transactions SET created_at = %s WHERE transaction_id = %s",
                       (created_at, scenario.id(transfer)))
        for dag_id in ("ledgerflow_clear", "ledgerflow_settle"):
            airflow_api.set_paused(dag_id, False)

        # only the test's hours: the database is shared, and other hours may wait for a re-drive too
        def make_redrive(*args: str):
            return subprocess.run(["make", "-s", "redrive", f"REDRIVE_ARGS=--from-hour {hour_before.isoformat()} "
                                   f"--to-hour {hour.isoformat()} {' '.join(args)}"], cwd=REPO_ROOT,
                                  capture_output=True, text=True, timeout=300)

        assert make_redrive("--dry-run").stdout.splitlines() == [
            f"{hour_before.isoformat()}  1 waiting", f"{hour.isoformat()}  1 waiting"]
        redrive = make_redrive()
        runs = re.findall(rf"^({re.escape(hour_before.isoformat())}|{re.escape(hour.isoformat())})  run (\S+) (\w+)$",
                          redrive.stdout, re.MULTILINE)
        run_ids += [run_id for _, run_id, _ in runs]
        assert redrive.returncode == 0, redrive.stderr
        assert [(logical_date, state) for logical_date, _, state in runs] == [
            (hour_before.isoformat(), "success"), (hour.isoformat(), "success")], redrive.stdout
        assert runs[1][1] == earlier_run
        first, second = (airflow_api.run("ledgerflow_produce_window", run_id) for _, run_id, _ in runs)
        statuses_once_terminal(scenario)
    finally:
        airflow_api.stop_pipeline()
        for run_id in set(run_ids):
            with contextlib.suppress(httpx.HTTPError):  # as above: the date's one run would be run again
                airflow_api.delete_run("ledgerflow_produce_window", run_id)

    assert datetime.fromisoformat(first["end_date"]) <= datetime.fromisoformat(second["start_date"])
    assert scenario.statuses() == {"T0": "settled", "T1": "settled"}
    assert scenario.balances()["A2"] == Scenario.SETTLED_BALANCES["A2"]  # 25,000.00 + 1,000.00
