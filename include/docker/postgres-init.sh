#!/usr/bin/env bash
# Runs once in the postgres container's first start: the pipeline and Airflow databases with their own roles,
# as stack.sh's bootstrap_databases does for the local stack.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE "$LEDGERFLOW_DB_USER" LOGIN PASSWORD '$LEDGERFLOW_DB_PASSWORD';
CREATE ROLE "$LEDGERFLOW_AIRFLOW_DB_USER" LOGIN PASSWORD '$LEDGERFLOW_AIRFLOW_DB_PASSWORD';
CREATE DATABASE "$LEDGERFLOW_DB_NAME" OWNER "$LEDGERFLOW_DB_USER";
CREATE DATABASE "$LEDGERFLOW_AIRFLOW_DB_NAME" OWNER "$LEDGERFLOW_AIRFLOW_DB_USER";
SQL
# The superuser on the container's own socket only, as on the local stack: its password is the pipeline role's
# (the image needs one), and over the published port it could switch off the audit and balance triggers. The
# entrypoint has written pg_hba.conf by now and reads it again when it starts the server for good; the first
# matching line wins.
sed -i '1i host all postgres all reject' "$PGDATA/pg_hba.conf"
