# The Airflow connections of the pipeline, in one place. Every process of the local stack (Airflow
# components, tests, project commands) gets them from here as AIRFLOW_CONN_* environment variables;
# nothing is stored in Airflow's metadata database. docker-compose.yaml mirrors them with the
# containers' host names, and tests/integration/test_compose.py checks the two agree.
export AIRFLOW_CONN_LEDGERFLOW_POSTGRES="postgresql://${LEDGERFLOW_DB_USER}:${LEDGERFLOW_DB_PASSWORD}@127.0.0.1:${LEDGERFLOW_PG_PORT}/${LEDGERFLOW_DB_NAME}"
export AIRFLOW_CONN_LEDGERFLOW_REDIS="redis://:${LEDGERFLOW_REDIS_PASSWORD}@127.0.0.1:${LEDGERFLOW_REDIS_PORT}${LEDGERFLOW_REDIS_DB:+?db=$LEDGERFLOW_REDIS_DB}"
export AIRFLOW_CONN_LEDGERFLOW_KAFKA="kafka://?bootstrap.servers=127.0.0.1%3A${LEDGERFLOW_KAFKA_PORT}"
