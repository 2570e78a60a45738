"""Drive the pipeline's DAGs from outside Airflow: pause and unpause them, fail their active runs, run one
with `airflow dags test`, read a task's XCom. Shared by the end-to-end tests and the benchmark.

Run from the repository root under include/stack/with-env (the REST API's address and login come from
the stack's environment).
"""

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

PIPELINE_DAGS = ["ledgerflow_produce", "ledgerflow_clear", "ledgerflow_settle", "ledgerflow_produce_window"]


# A task's process is titled `airflow worker -- <id>`, and before it retitles itself, as the executor's worker that
# started it, `airflow worker -- LocalExecutor: <id>` (with a team in brackets, if any).
TASK_PROCESS_TITLE = re.compile(rb"airflow worker -- (?:LocalExecutor(?: \[[^]]*\])?: )?(\S+)")


def _process_titles() -> Iterator[tuple[int, bytes]]:
    """(pid, title) of every process on this machine: the first word of its command line, or the title it set."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            yield int(cmdline.parent.name), cmdline.read_bytes().split(b"\0")[0]
        except OSError:  # ended meanwhile
            continue


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command's name (state, parent, process group, ...); None once the
    process has ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def parent_of(pid: int) -> int | None:
    return int(fields[1]) if (fields := _stat_fields(pid)) else None


def group_of(pid: int) -> int | None:
    """The process's process group."""
    return int(fields[2]) if (fields := _stat_fields(pid)) else None


@dataclass(frozen=True, slots=True)
class TaskProcess:
    pid: int
    task_instance_id: str  # "<idle>" for an executor's worker between tasks
    supervisor: bool  # the executor's worker that started the task and supervises it, not the task itself


def task_processes_on_this_machine() -> list[TaskProcess]:
    """The processes of Airflow's tasks on this machine and of the executor's workers that run them; none where the
    tasks run elsewhere, in containers say."""
    return [TaskProcess(pid, match.group(1).decode(errors="replace"),
                        title.startswith(b"airflow worker -- LocalExecutor"))
            for pid, title in _process_titles() if (match := TASK_PROCESS_TITLE.match(title))]


def task_processes_here() -> set[str]:
    """The ids of the task instances whose processes run on this machine."""
    return {process.task_instance_id for process in task_processes_on_this_machine()}


class DagTestFailed(AssertionError):
    """`airflow dags test` did not end with a successful run; the message holds the end of its output."""


def api_failure_message(error: httpx.HTTPError) -> str | None:
    """One line for a command to print instead of the traceback of an API call that failed for a reason outside
    it: what failed and what to do next. None for any other error, whose traceback tells more."""
    request = error.request
    call = f"Airflow's api-server ({request.method} {request.url})"
    if isinstance(error, httpx.TransportError):  # nothing answered: refused, unknown host, timed out
        return f"{call}: {type(error).__name__}: {error}: is the stack up? (make status)"
    if not isinstance(error, httpx.HTTPStatusError):
        return None
    status = error.response.status_code
    if status in (401, 403):
        return (f"{call} refused the admin user ({status}): check LEDGERFLOW_AIRFLOW_ADMIN_USER and "
                f"LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD (.env) against the api-server's users")
    if status == 404:
        return (f"{call} has no such DAG or run (404): is the DAG parsed, without import errors? "
                f"(include/stack/with-env airflow dags list-import-errors)")
    return None


class AirflowApi:
    """Airflow's REST API (v2) as the admin user: the local stack's, or LEDGERFLOW_AIRFLOW_URL's (under docker
    compose, the api-server's container)."""

    def __init__(self):
        base = os.environ.get("LEDGERFLOW_AIRFLOW_URL") or f"http://127.0.0.1:{os.environ['LEDGERFLOW_AIRFLOW_PORT']}"
        login = httpx.post(f"{base}/auth/token", json={
            "username": os.environ["LEDGERFLOW_AIRFLOW_ADMIN_USER"],
            "password": os.environ["LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD"]})
        login.raise_for_status()  # a refused login says so, not KeyError: 'access_token'
        token = login.json()["access_token"]
        self.client = httpx.Client(base_url=f"{base}/api/v2", headers={"Authorization": f"Bearer {token}"},
                                   timeout=30)

    def is_paused(self, dag_id: str) -> bool:
        response = self.client.get(f"/dags/{dag_id}")
        response.raise_for_status()
        return response.json()["is_paused"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.client.patch(f"/dags/{dag_id}", json={"is_paused": paused}).raise_for_status()

    def _every_page(self, path: str, key: str, params: dict) -> list[dict]:
        """Every item of a listing, in pages of the API's maximum, 100."""
        items: list[dict] = []
        while True:
            response = self.client.get(path, params={**params, "limit": 100, "offset": len(items)})
            response.raise_for_status()
            page = response.json()[key]
            items += page
            if len(page) < 100:
                return items

    def active_runs(self, dag_id: str) -> list[dict]:
        # a backfill queues all its runs at once: a day's is 24, a week's 168
        return [run for state in ("queued", "running")
                for run in self._every_page(f"/dags/{dag_id}/dagRuns", "dag_runs", {"state": state})]

    def fail_active_runs(self, dag_id: str) -> list[dict]:
        """Fail the DAG's queued and running runs; returns them."""
        runs = self.active_runs(dag_id)
        for run in runs:
            response = self.client.patch(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}", json={"state": "failed"})
            response.raise_for_status()
        return runs

    def stop_pipeline(self, timeout: float = 60) -> set[str]:
        """Pause every pipeline DAG, fail its active runs, and wait for their tasks' processes to end, so nothing
        else consumes the pipeline's consumer groups or takes up its transactions. Failing a run marks its tasks
        failed at once, but a task's process learns it only at its next heartbeat, seconds later. A task stopped
        mid-batch loses nothing: its effects and offsets are transactional. Processes still there after `timeout`
        are reported and returned (their task instances' ids), not raised: this also runs in `finally` blocks,
        whose own error must not be hidden."""
        tasks = set()
        for dag_id in PIPELINE_DAGS:
            self.set_paused(dag_id, True)
            # every task of the runs failed, whatever its state was: any of them may have a process still running
            tasks.update(task["id"] for run in self.fail_active_runs(dag_id)
                         for task in self.task_instances(dag_id, run["dag_run_id"]))
        deadline = time.monotonic() + timeout
        while left := tasks & task_processes_here():
            if time.monotonic() > deadline:
                print(f"warning: task instances {sorted(left)} still run {timeout:.0f} s after their runs failed",
                      file=sys.stderr)
                return left
            time.sleep(0.5)
        return set()

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        response = self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        return response.json()["task_instances"]

    def trigger(self, dag_id: str, logical_date: datetime | None = None) -> str:
        """Trigger a run, by default as the UI's and CLI's trigger does, without a logical date; returns its id."""
        response = self.client.post(f"/dags/{dag_id}/dagRuns",
                                    json={"logical_date": logical_date and logical_date.isoformat()})
        response.raise_for_status()
        return response.json()["dag_run_id"]

    def run_again(self, dag_id: str, logical_date: datetime) -> str:
        """Run the DAG for `logical_date`: a new run, or, as Airflow keeps one run per logical date, the one there is
        cleared to run again; returns its id."""
        try:
            return self.trigger(dag_id, logical_date)
        except httpx.HTTPStatusError as error:
            if error.response.status_code != 409:
                raise
        response = self.client.get(f"/dags/{dag_id}/dagRuns", params={
            "logical_date_gte": logical_date.isoformat(), "logical_date_lte": logical_date.isoformat()})
        response.raise_for_status()
        [run] = response.json()["dag_runs"]
        self.client.post(f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}/clear",
                         json={"dry_run": False}).raise_for_status()
        return run["dag_run_id"]

    def finished_state(self, dag_id: str, run_id: str, timeout: float = 1800) -> str:
        """The run's state once it has succeeded or failed; TimeoutError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (state := self.run(dag_id, run_id)["state"]) not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s")
            time.sleep(1)
        return state

    def delete_run(self, dag_id: str, run_id: str) -> None:
        self.client.delete(f"/dags/{dag_id}/dagRuns/{run_id}").raise_for_status()

    def run(self, dag_id: str, run_id: str) -> dict:
        response = self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return response.json()

    def rendered_fields(self, dag_id: str, run_id: str, task_id: str) -> dict:
        """A task's templated fields as its run rendered them."""
        response = self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
        response.raise_for_status()
        return response.json()["rendered_fields"]

    def queued_task_instance_ids(self) -> set[str]:
        return {task["id"] for task in self._every_page("/dags/~/dagRuns/~/taskInstances", "task_instances",
                                                         {"state": "queued"})}

    def running_tasks(self, dag_id: str) -> list[dict]:
        response = self.client.get(f"/dags/{dag_id}/dagRuns/~/taskInstances", params={"state": "running"})
        response.raise_for_status()
        return response.json()["task_instances"]

    def runs_since(self, dag_id: str, since: datetime) -> list[dict]:
        return self._every_page(f"/dags/{dag_id}/dagRuns", "dag_runs",
                                {"start_date_gte": since.isoformat(), "order_by": "start_date"})

    def xcom(self, dag_id: str, run_id: str, task_id: str):
        """A task's return value in one run, or None if it returned nothing."""
        response = self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return response.json()["value"]


def run_dag(dag_id: str, logical_date: datetime | None = None, timeout: float = 900) -> str:
    """Run a DAG once with `airflow dags test` and return its run id; raise DagTestFailed unless the run
    succeeded. A one-off run drains what is there: clear and settle stop one second after the last
    message instead of waiting for more of a stream."""
    command = ["airflow", "dags", "test", dag_id] + ([logical_date.isoformat()] if logical_date else [])
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "LEDGERFLOW_IDLE_TIMEOUT_SECONDS": "1"})
    output = result.stdout + result.stderr
    finished = re.search(r"DagRun Finished: .*?run_id=([^,]+), .*?state=(\w+)", output)
    if result.returncode != 0 or not finished or finished.group(2) != "success":
        raise DagTestFailed(f"`{' '.join(command)}` failed:\n{output[-5000:]}")
    return finished.group(1)
