# The project's commands. Each is idempotent: running it again while things are up does no harm.
STACK := include/stack/stack.sh
WITH_ENV := include/stack/with-env
# psql on the pipeline database; arguments after it go to psql
PSQL := $(WITH_ENV) bash -c 'PGPASSWORD="$$LEDGERFLOW_DB_PASSWORD" exec psql -h 127.0.0.1 -p "$$LEDGERFLOW_PG_PORT" -U "$$LEDGERFLOW_DB_USER" -d "$$LEDGERFLOW_DB_NAME" "$$@"' psql

.PHONY: run start test stop status waiting redrive rewrite-records reset install migrate psql redis-cli secrets schemas check-rules bench drill

run:  ## install and start everything, run the pipeline on sample data, say where to look
	@$(STACK) up
	@$(STACK) pipeline on
	@$(WITH_ENV) python include/generate_transactions.py $(or $(GENERATE_ARGS),--count 1000 --accounts 100 --rate 200 --wait)

start:  ## install and start everything and unpause the pipeline's DAGs, adding no transactions (after make stop or a reboot)
	@$(STACK) up
	@$(STACK) pipeline on

test:  ## install and start everything, then run the whole test suite
	@$(STACK) up
	@$(WITH_ENV) python -m pytest $(PYTEST_ARGS)

stop:  ## stop every component of the local stack
	@$(STACK) down

status:  ## up/down, port and data directory of each component
	@$(STACK) status

waiting:  ## the transactions not settled or rejected yet: how many wait for what, and since when
	@$(PSQL) -c "SELECT waits_for, status, count(*) AS transactions, min(since) AS oldest_since, \
	                    date_trunc('second', now() - min(since)) AS oldest_for \
	               FROM transactions_waiting GROUP BY waits_for, status ORDER BY oldest_since"

redrive:  ## re-drive each hour holding a transaction that waits for a re-drive, or for clear or settle over 10 minutes (REDRIVE_ARGS)
	@$(WITH_ENV) python -m include.redrive_waiting $(REDRIVE_ARGS)

rewrite-records:  ## write the Redis records of settled and rejected transactions again from PostgreSQL (REWRITE_ARGS="--since ...")
	@$(WITH_ENV) python include/rewrite_records.py $(REWRITE_ARGS)

reset:  ## start the pipeline's data over: its database (schema and sample data only), topics and Redis records
	@$(STACK) reset

install:  ## install the Debian packages, Python dependencies and Kafka jars only
	@$(STACK) install

migrate:  ## apply the migrations in sql/ that are not applied yet
	@$(STACK) migrate

psql:  ## a psql shell on the pipeline database
	@$(PSQL)

redis-cli:  ## a redis-cli shell on the pipeline's Redis
	@$(WITH_ENV) bash -c 'REDISCLI_AUTH="$$LEDGERFLOW_REDIS_PASSWORD" exec redis-cli -p "$$LEDGERFLOW_REDIS_PORT" -n "$${LEDGERFLOW_REDIS_DB:-0}"'

secrets:  ## generate .env (the local stack's and docker compose's secrets) if it does not exist yet
	@$(WITH_ENV) true && echo "secrets are in .env"

schemas:  ## regenerate the Kafka message JSON Schemas in include/schemas from the message definitions
	@$(WITH_ENV) python -m ledgerflow.core.messages include/schemas

check-rules:  ## validate include/rules.yaml
	@$(WITH_ENV) python -m ledgerflow.core.config include/rules.yaml

bench:  ## start everything, then stage rates and peak memory on a 100,000 backlog, uniform and hot-account (see include/bench)
	@$(STACK) up
	@$(WITH_ENV) python -m include.bench.pipeline_bench stages $(BENCH_ARGS)
	@$(WITH_ENV) python -m include.bench.pipeline_bench stages --hot $(BENCH_ARGS)

drill:  ## start everything, then kill tasks and restart Kafka, Redis and PostgreSQL while the pipeline takes a load, and check its promises (DRILL_ARGS)
	@$(STACK) up
	@$(WITH_ENV) python -m include.bench.fault_drill $(DRILL_ARGS)
