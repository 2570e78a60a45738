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
