"""Who made a status change: the Airflow task instance, or a named actor outside Airflow."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AuditContext:
    changed_by: str
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    map_index: int | None = None

    def settings(self) -> dict[str, str]:
        """The ledgerflow.* session settings the database's audit trigger reads ('' means NULL)."""
        values = {"changed_by": self.changed_by, "dag_id": self.dag_id, "run_id": self.run_id,
                  "task_id": self.task_id, "try_number": self.try_number, "map_index": self.map_index}
        return {f"ledgerflow.{key}": "" if value is None else str(value) for key, value in values.items()}
