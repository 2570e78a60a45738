"""What every ledgerflow operator needs from Airflow: the audit identity of the running task and a
database connection from the provider's hook."""

import resource

from airflow.providers.postgres.hooks.postgres import PostgresHook

from ledgerflow.core.audit import AuditContext


def audit_context(context) -> AuditContext:
    ti = context["ti"]
    return AuditContext(changed_by=f"airflow:{ti.dag_id}.{ti.task_id}", dag_id=ti.dag_id, run_id=ti.run_id,
                        task_id=ti.task_id, try_number=ti.try_number, map_index=ti.map_index)


def postgres_connection(postgres_conn_id: str):
    """A psycopg 3 connection in autocommit mode: the ledger functions open their own transactions."""
    conn = PostgresHook(postgres_conn_id=postgres_conn_id).get_conn()
    conn.autocommit = True
    return conn


def peak_memory_mb() -> float:
    """The task process's peak resident memory so far, for the run summary."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
