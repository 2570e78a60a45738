# Non-secret settings of the local stack. Each one may be overridden from the environment
# (for example `LEDGERFLOW_PG_PORT=5433 make run`); secrets live in the git-ignored `.env`.
: "${LEDGERFLOW_PG_PORT:=5432}"
: "${LEDGERFLOW_REDIS_PORT:=6379}"
: "${LEDGERFLOW_KAFKA_PORT:=9092}"
: "${LEDGERFLOW_KAFKA_CONTROLLER_PORT:=9093}"
: "${LEDGERFLOW_AIRFLOW_PORT:=8080}"
# The scheduler's and the triggerer's log servers, which the UI reads running tasks' logs from (Airflow binds them
# to every interface; a request needs a token signed with the stack's secret).
: "${LEDGERFLOW_WORKER_LOG_PORT:=8793}"
: "${LEDGERFLOW_TRIGGER_LOG_PORT:=8794}"

: "${LEDGERFLOW_DB_NAME:=financial_db}"
: "${LEDGERFLOW_DB_USER:=ledgerflow}"
: "${LEDGERFLOW_AIRFLOW_DB_NAME:=airflow}"
: "${LEDGERFLOW_AIRFLOW_DB_USER:=airflow}"
: "${LEDGERFLOW_AIRFLOW_ADMIN_USER:=admin}"
# The Redis database of the settlement and rejection records; empty is Redis's default, database 0.
: "${LEDGERFLOW_REDIS_DB:=}"

: "${LEDGERFLOW_TOPICS:=financial-transactions cleared-transactions financial-transactions.dlq cleared-transactions.dlq}"
: "${LEDGERFLOW_TOPIC_PARTITIONS:=3}"
: "${LEDGERFLOW_KAFKA_HEAP:=1g}"

export LEDGERFLOW_PG_PORT LEDGERFLOW_REDIS_PORT LEDGERFLOW_KAFKA_PORT LEDGERFLOW_KAFKA_CONTROLLER_PORT \
  LEDGERFLOW_AIRFLOW_PORT LEDGERFLOW_WORKER_LOG_PORT LEDGERFLOW_TRIGGER_LOG_PORT LEDGERFLOW_DB_NAME \
  LEDGERFLOW_DB_USER LEDGERFLOW_AIRFLOW_DB_NAME LEDGERFLOW_AIRFLOW_DB_USER LEDGERFLOW_AIRFLOW_ADMIN_USER \
  LEDGERFLOW_REDIS_DB LEDGERFLOW_TOPICS LEDGERFLOW_TOPIC_PARTITIONS LEDGERFLOW_KAFKA_HEAP
