-- The index that finds what one Airflow run changed was on (dag_id, run_id) alone, so each status
-- UPDATE of a batch inserted 10,000 equal keys into it, and B-tree deduplication rewrote the same
-- leaf pages over and over: on a 9-million-row audit table it cost 165 ms of a 750 ms settle UPDATE.
-- With the audit id in the key every entry is unique and a run's entries are appended in order;
-- the same lookups (a run's changes, now also in the order they were made) use it. The audit trigger
-- went from 515 ms to 171 ms for that UPDATE.
DROP INDEX transaction_audit_run_id;
CREATE INDEX transaction_audit_run_id ON transaction_audit (dag_id, run_id, id);
