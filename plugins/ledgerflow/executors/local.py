"""Airflow's LocalExecutor, with the revoke that lets the scheduler requeue a task stuck in `queued`.

A task stays `queued` until its supervisor, one of the executor's worker processes, starts it. A worker killed
after it took the task from the executor's queue and before it started it (the OOM killer, an operator's kill)
leaves no one to start or fail it. The scheduler's remedy is `[scheduler] task_queued_timeout`: it revokes such a
task from its executor and schedules it again (twice, then fails it). LocalExecutor does not implement revoke, so
the scheduler skips its tasks, and a stuck task holds clear or settle, which run one at a time, until the
scheduler restarts.
"""

from airflow.executors.local_executor import LocalExecutor


class RequeuingLocalExecutor(LocalExecutor):
    def revoke_task(self, *, ti) -> None:
        # A workload already on the workers' queue cannot be taken back. So the timeout must exceed the longest a
        # task waits for a free worker: a workload still taken after its task was scheduled again starts it once
        # (the API server starts a task only from queued), and the other one's refusal fails that try.
        self.queued_tasks.pop(ti.key, None)
