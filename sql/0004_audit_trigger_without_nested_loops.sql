-- The audit trigger pairs old_rows and new_rows by id. Transition tables have no statistics, so the
-- planner guessed a nested loop: quadratic in the rows of the statement, 7.7 s for one 10,000-row
-- UPDATE (produce marking a batch published, clear and settle moving a batch's statuses). A hash
-- join does the same pairing in linear time: 0.15 s for that UPDATE.
ALTER FUNCTION transactions_audit_status_change() SET enable_nestloop = off;
