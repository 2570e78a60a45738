#!/usr/bin/env bash
# The local stack without Docker: installs and runs PostgreSQL, Redis, Kafka (KRaft) and Airflow under
# supervisord. Every subcommand is idempotent.
#
#   stack.sh install            apt packages, the Python virtualenv, the Kafka jars
#   stack.sh up [--no-airflow]  install, then start everything, apply the schema and sample data
#   stack.sh down               stop everything
#   stack.sh status             up/down, port and data directory of each component
#   stack.sh migrate            apply the migrations in sql/ that are not applied yet
#   stack.sh pipeline on|off    unpause (pause) the produce, clear and settle DAGs
#   stack.sh reset              start the pipeline's data over: database, topics and Redis records
#   stack.sh leftovers          end what Airflow programs killed outright left behind (down does it too)
#   stack.sh airflow PROGRAM    for supervisord: end what PROGRAM killed left, then run `airflow PROGRAM`
set -euo pipefail
# Both checked before env.sh, which would fail on root's .env, or write one that a later run as root could not use.
case "${1:-}" in
  install|up|down|status|migrate|pipeline|reset|leftovers|airflow) ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
# Every subcommand works on a stack that root installed and runs (Debian packages, services run as postgres and
# root, supervisord's root-only socket, root's .env).
if [ "$(id -u)" -ne 0 ]; then
  printf 'error: stack.sh %s needs root: the stack is installed and run as root (try sudo)\n' "$1" >&2
  exit 1
fi
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"

STACK_DIR="$LEDGERFLOW_ROOT/include/stack"
LOG_DIR="$LEDGERFLOW_STATE/logs"
SUPERVISOR_CONF="$LEDGERFLOW_STATE/supervisor/supervisord.conf"
KAFKA_LIBS="$LEDGERFLOW_STATE/kafka/libs"
KAFKA_CONF="$LEDGERFLOW_STATE/kafka/server.properties"
KAFKA_DATA="$LEDGERFLOW_STATE/kafka/data"
REDIS_CONF="$LEDGERFLOW_STATE/redis/redis.conf"
REDIS_DATA="$LEDGERFLOW_STATE/redis/data"

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Run a step only when its inputs changed since it last succeeded (the stamp holds their checksum).
stamp_matches() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# --- install ---------------------------------------------------------------------------------------

install_apt_packages() {
  local missing=()
  # Debian's python3 makes virtualenvs only with python3-venv (ensurepip)
  python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3 python3-venv)
  command -v redis-server >/dev/null || missing+=(redis-server)
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  command -v curl >/dev/null || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return
  say "installing Debian packages: ${missing[*]}"
  # apt-get update takes the package lists' lock without waiting (another apt, apt-daily say, may hold it)
  local tries=1
  until apt-get update -qq; do
    [ $tries -lt 20 ] || die "apt-get update failed 20 times, 30 s apart"
    say "apt-get update failed (another apt running?); trying again in 30 s"
    sleep 30
    tries=$((tries + 1))
  done
  without_package_service_starts env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
  # ... nor at the next boot, on a host that runs systemd: only the units this install brought
  if [ -d /run/systemd/system ]; then
    local package
    for package in postgresql redis-server; do
      if [[ " ${missing[*]} " == *" $package "* ]]; then systemctl disable "$package" >/dev/null 2>&1 || true; fi
    done
  fi
}

# Runs "$@" with the services of the packages the stack needs (PostgreSQL's cluster, redis-server) kept from
# starting, as Debian's container images keep all services: on a host that runs them, they would take 5432 and
# 6379 from the stack (invoke-rc.d names them postgresql and redis-server; deb-systemd-invoke adds .service, or
# @15-main). Others (say, restarts by unattended-upgrades while apt waits for its lock) go on.
# Another tool's policy-rc.d is left alone; a copy of ours that a killed run left behind is removed first.
POLICY_RC_D=/usr/sbin/policy-rc.d
POLICY_MARK="# ledgerflow: refuses only the services the stack runs itself, while it installs packages"
without_package_service_starts() {
  local status=0
  if [ -e "$POLICY_RC_D" ] && grep -qxF "$POLICY_MARK" "$POLICY_RC_D"; then rm -f "$POLICY_RC_D"; fi
  # noclobber: created only if absent, in one step
  # (invoke-rc.d may pass options, such as --quiet, before the service's name)
  if ! (set -C; printf '%s\n' '#!/bin/sh' "$POLICY_MARK" 'while [ "${1#--}" != "$1" ]; do shift; done' \
          'case "$1" in postgresql*|redis-server*) exit 101 ;; esac' 'exit 0' >"$POLICY_RC_D") 2>/dev/null; then
    "$@"
    return
  fi
  chmod 755 "$POLICY_RC_D"
  trap remove_our_policy_rc_d EXIT  # an interrupted install must not leave the services refused
  "$@" || status=$?
  remove_our_policy_rc_d
  trap - EXIT
  return $status
}
remove_our_policy_rc_d() {
  if grep -qxF "$POLICY_MARK" "$POLICY_RC_D" 2>/dev/null; then rm -f "$POLICY_RC_D"; fi
}

install_python() {
  local stamp="$LEDGERFLOW_VENV/.requirements.sha256" sum
  sum=$(sha256sum "$LEDGERFLOW_ROOT/requirements.txt" | cut -d' ' -f1)
  stamp_matches "$stamp" "$sum" && return
  say "installing Python dependencies into .venv"
  # pip, not python: a venv that failed half-way (no ensurepip) has bin/python and no pip
  [ -x "$LEDGERFLOW_VENV/bin/pip" ] || python3 -m venv --clear "$LEDGERFLOW_VENV"
  "$LEDGERFLOW_VENV/bin/pip" install -q --disable-pip-version-check -r "$LEDGERFLOW_ROOT/requirements.txt"
  echo "$sum" >"$stamp"
}

install_kafka() {
  local stamp="$KAFKA_LIBS/.pom.sha256" sum
  sum=$(sha256sum "$STACK_DIR/pom.xml" | cut -d' ' -f1)
  stamp_matches "$stamp" "$sum" && return
  say "resolving the Kafka broker jars from Maven Central"
  rm -rf "$KAFKA_LIBS" && mkdir -p "$KAFKA_LIBS" "$LOG_DIR"
  mvn -B -f "$STACK_DIR/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS" >"$LOG_DIR/mvn.log" 2>&1 ||
    die "resolving the Kafka jars failed; see $LOG_DIR/mvn.log"
  echo "$sum" >"$stamp"
}

cmd_install() {
  install_apt_packages
  install_python
  install_kafka
}

# --- configuration ---------------------------------------------------------------------------------

pg_bindir() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }

# PostgreSQL refuses to run as root, so its files belong to the postgres user; when that user cannot
# reach the checkout (a clone under /root, say), its data lives under /var/lib/ledgerflow instead.
pg_root() {
  if runuser -u postgres -- test -x "$LEDGERFLOW_STATE" 2>/dev/null; then
    echo "$LEDGERFLOW_STATE/postgres"
  else
    echo "/var/lib/ledgerflow/$(echo "$LEDGERFLOW_STATE" | sha256sum | cut -c1-12)/postgres"
  fi
}

write_supervisor_conf() {
  local pg="$1"
  mkdir -p "$(dirname "$SUPERVISOR_CONF")" "$LOG_DIR"
  cat >"$SUPERVISOR_CONF" <<EOF
; Written by include/stack/stack.sh; edit that, not this.
[unix_http_server]
file=$LEDGERFLOW_STATE/supervisor/supervisor.sock
chmod=0700

[supervisord]
logfile=$LOG_DIR/supervisord.log
pidfile=$LEDGERFLOW_STATE/supervisor/supervisord.pid
childlogdir=$LOG_DIR

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$LEDGERFLOW_STATE/supervisor/supervisor.sock

[program:postgres]
; the settings docker-compose.yaml gives PostgreSQL too, and why they differ from the defaults; started with an
; empty environment, as supervisord's holds the stack's secrets (passwords, keys, connections), which PostgreSQL
; needs none of and which its OS user could otherwise read from /proc
command=env -i LANG=C.UTF-8 $(pg_bindir)/postgres -D $pg/data -c listen_addresses=127.0.0.1 -c port=$LEDGERFLOW_PG_PORT
  -c unix_socket_directories=$pg/socket -c max_connections=300 -c shared_buffers=1GB
  -c max_wal_size=4GB -c checkpoint_timeout=15min -c random_page_cost=1.1 -c effective_cache_size=4GB
user=postgres
autostart=false
stopsignal=INT
stopwaitsecs=60
redirect_stderr=true
stdout_logfile=$LOG_DIR/postgres.log

[program:redis]
command=redis-server $REDIS_CONF
autostart=false
redirect_stderr=true
stdout_logfile=$LOG_DIR/redis.log

[program:kafka]
command=java -Xms512m -Xmx$LEDGERFLOW_KAFKA_HEAP -XX:+UseG1GC -Djava.awt.headless=true
  -Dlog4j2.configurationFile=$STACK_DIR/kafka-log4j2.properties
  -cp "$KAFKA_LIBS/*" kafka.Kafka $KAFKA_CONF
autostart=false
stopwaitsecs=60
redirect_stderr=true
stdout_logfile=$LOG_DIR/kafka.log

[group:services]
programs=postgres,redis,kafka
; Started before and stopped after the airflow group (supervisord stops the group of highest priority first and
; waits for all of it): Airflow's running tasks end while the database and the broker are still there.
priority=100

[program:airflow-api-server]
command=$STACK_DIR/stack.sh airflow api-server --port $LEDGERFLOW_AIRFLOW_PORT --workers 1
autostart=false
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$LOG_DIR/airflow-api-server.log

[program:airflow-scheduler]
command=$STACK_DIR/stack.sh airflow scheduler
autostart=false
; Stopped, the scheduler waits for its running tasks, which get the SIGTERM too (stopasgroup, passed on by its
; workers): a drain ends at its next wait (on_kill), usually in seconds. Supervisor's default of 10 s killed the
; scheduler while they ran on, unseen; a batch still waiting for locks after 60 s is cut off and redelivered.
stopwaitsecs=60
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$LOG_DIR/airflow-scheduler.log

[program:airflow-dag-processor]
command=$STACK_DIR/stack.sh airflow dag-processor
autostart=false
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$LOG_DIR/airflow-dag-processor.log

[program:airflow-triggerer]
command=$STACK_DIR/stack.sh airflow triggerer
autostart=false
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$LOG_DIR/airflow-triggerer.log

[group:airflow]
programs=airflow-api-server,airflow-scheduler,airflow-dag-processor,airflow-triggerer
priority=200
EOF
}

# Returns 0 when the file changed, so that a running Redis is restarted with it. Called as `write_redis_conf &&`,
# which turns `set -e` off inside it: each write dies on its own failure (a full disk would otherwise put an empty
# file in place, and Redis would start without its password and its append-only file).
write_redis_conf() {
  mkdir -p "$REDIS_DATA" || die "could not make $REDIS_DATA"
  (
    umask 077
    cat >"$REDIS_CONF.new" <<EOF
# Written by include/stack/stack.sh; edit that, not this.
bind 127.0.0.1
port $LEDGERFLOW_REDIS_PORT
protected-mode yes
requirepass $LEDGERFLOW_REDIS_PASSWORD
daemonize no
logfile ""
dir $REDIS_DATA
# The append-only file alone keeps the records, synced before Redis replies: settle commits a batch's offsets once
# its records are written, and a record lost after that (a machine that crashed within the second a sync once a
# second leaves open) would never be written again. settle writes a batch in one MULTI, so one sync a batch.
# Redis also took RDB snapshots by default: under load one every minute, each a forked child rewriting the whole
# dataset for about 30 s, a core's worth of CPU taken from the pipeline.
appendonly yes
appendfsync always
save ""
EOF
  ) || die "could not write $REDIS_CONF.new"
  if cmp -s "$REDIS_CONF.new" "$REDIS_CONF"; then rm "$REDIS_CONF.new"; return 1; fi
  mv "$REDIS_CONF.new" "$REDIS_CONF" || die "could not replace $REDIS_CONF"
}

# Returns 0 when the file changed, so that a running broker is restarted with it (each write dies on its own
# failure, as in write_redis_conf).
write_kafka_conf() {
  mkdir -p "$KAFKA_DATA" || die "could not make $KAFKA_DATA"
  cat >"$KAFKA_CONF.new" <<EOF || die "could not write $KAFKA_CONF.new"
# Written by include/stack/stack.sh; edit that, not this. A single KRaft broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$LEDGERFLOW_KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$LEDGERFLOW_KAFKA_PORT,CONTROLLER://127.0.0.1:$LEDGERFLOW_KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$LEDGERFLOW_KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
# Topics are created by the project with the partition count it wants (create_topics.py), never by a typo.
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  if cmp -s "$KAFKA_CONF.new" "$KAFKA_CONF"; then rm "$KAFKA_CONF.new"; return 1; fi
  mv "$KAFKA_CONF.new" "$KAFKA_CONF" || die "could not replace $KAFKA_CONF"
}

# --- start -----------------------------------------------------------------------------------------

supervisorctl() { "$LEDGERFLOW_VENV/bin/supervisorctl" -c "$SUPERVISOR_CONF" "$@"; }
supervisord_running() {
  [ -S "$LEDGERFLOW_STATE/supervisor/supervisor.sock" ] && [ -x "$LEDGERFLOW_VENV/bin/supervisorctl" ] &&
    supervisorctl pid >/dev/null 2>&1
}
program_running() { supervisord_running && supervisorctl status "$1" 2>/dev/null | grep -q RUNNING; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port held by anything but our own program is a clear stop, not a confusing failure later.
require_free_port() {
  local program="$1" port="$2" setting="$3"
  program_running "$program" && return
  if port_open "$port"; then
    die "port $port (for ${program#*:}) is taken by another process; stop it or choose another port with $setting=<port>"
  fi
}

wait_for() {
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within ${seconds}s; see $LOG_DIR"
    sleep 0.5
  done
}

# The password goes in the environment, not the command line, which any local user can read in ps.
redis_cli() { REDISCLI_AUTH="$LEDGERFLOW_REDIS_PASSWORD" redis-cli -p "$LEDGERFLOW_REDIS_PORT" "$@"; }
redis_ready() { [ "$(redis_cli ping 2>/dev/null)" = PONG ]; }

start_program() {
  program_running "$1" && return
  supervisorctl start "$1" >/dev/null || die "$1 failed to start; see $LOG_DIR/$1.log"
}

# Outside the checkout (see pg_root), PostgreSQL's data outlives it: a checkout deleted and cloned again at the
# same path would bring back the old databases (Airflow's history, transactions published into topics that are
# gone) beside new topics, Redis and secrets. Data that this checkout's state does not claim is moved aside when
# the checkout has never been up (no supervisord.conf, which every `up` writes); a checkout that has been up
# claims the data it has.
claim_postgres_data() {
  local pg="$1" claim="$LEDGERFLOW_STATE/postgres-data-path" aside pid
  case "$pg" in "$LEDGERFLOW_STATE"/*) return 0 ;; esac
  if [ -f "$pg/data/PG_VERSION" ] && [ ! -f "$claim" ] && [ ! -f "$SUPERVISOR_CONF" ]; then
    pid=$(head -n 1 "$pg/data/postmaster.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null &&
      die "PostgreSQL of an earlier checkout at this path still runs on $pg/data (pid $pid): stop it first"
    aside="$pg.earlier-checkout-$(date +%Y%m%d%H%M%S)"
    mv "$pg" "$aside"
    say "moved the PostgreSQL data of an earlier checkout at this path to $aside; remove it once not needed"
  fi
  echo "$pg" >"$claim"
}

init_postgres() {
  local pg="$1"
  claim_postgres_data "$pg"
  mkdir -p "$pg/socket" && chown postgres:postgres "$pg" "$pg/socket"
  [ -f "$pg/data/PG_VERSION" ] && return
  say "initialising PostgreSQL in $pg/data"
  runuser -u postgres -- "$(pg_bindir)/initdb" -D "$pg/data" -U postgres \
    --auth-local=peer --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
}

pg_admin() { runuser -u postgres -- psql -h "$PG_ROOT/socket" -p "$LEDGERFLOW_PG_PORT" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }

# Roles get passwords (scram over TCP); only the local superuser uses peer auth on the socket.
bootstrap_databases() {
  pg_admin -d postgres <<EOF
SELECT format('CREATE ROLE %I LOGIN', '$LEDGERFLOW_DB_USER')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$LEDGERFLOW_DB_USER') \gexec
SELECT format('CREATE ROLE %I LOGIN', '$LEDGERFLOW_AIRFLOW_DB_USER')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$LEDGERFLOW_AIRFLOW_DB_USER') \gexec
ALTER ROLE "$LEDGERFLOW_DB_USER" PASSWORD '$LEDGERFLOW_DB_PASSWORD';
ALTER ROLE "$LEDGERFLOW_AIRFLOW_DB_USER" PASSWORD '$LEDGERFLOW_AIRFLOW_DB_PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$LEDGERFLOW_DB_NAME', '$LEDGERFLOW_DB_USER')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$LEDGERFLOW_DB_NAME') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', '$LEDGERFLOW_AIRFLOW_DB_NAME', '$LEDGERFLOW_AIRFLOW_DB_USER')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$LEDGERFLOW_AIRFLOW_DB_NAME') \gexec
EOF
}

format_kafka_storage() {
  [ -f "$KAFKA_DATA/meta.properties" ] && return
  say "formatting Kafka storage in $KAFKA_DATA"
  local cluster_id
  cluster_id=$(java -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  java -Dlog4j2.configurationFile="$STACK_DIR/kafka-log4j2.properties" -cp "$KAFKA_LIBS/*" \
    kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$KAFKA_CONF" >/dev/null
}

require_free_ports() {
  require_free_port services:postgres "$LEDGERFLOW_PG_PORT" LEDGERFLOW_PG_PORT
  require_free_port services:redis "$LEDGERFLOW_REDIS_PORT" LEDGERFLOW_REDIS_PORT
  require_free_port services:kafka "$LEDGERFLOW_KAFKA_PORT" LEDGERFLOW_KAFKA_PORT
  require_free_port services:kafka "$LEDGERFLOW_KAFKA_CONTROLLER_PORT" LEDGERFLOW_KAFKA_CONTROLLER_PORT
  if [ "$1" -eq 1 ]; then
    require_free_port airflow:airflow-api-server "$LEDGERFLOW_AIRFLOW_PORT" LEDGERFLOW_AIRFLOW_PORT
    require_free_port airflow:airflow-scheduler "$LEDGERFLOW_WORKER_LOG_PORT" LEDGERFLOW_WORKER_LOG_PORT
    require_free_port airflow:airflow-triggerer "$LEDGERFLOW_TRIGGER_LOG_PORT" LEDGERFLOW_TRIGGER_LOG_PORT
  fi
  return 0
}

start_services() {
  mkdir -p "$LEDGERFLOW_STATE"
  PG_ROOT=$(pg_root)
  init_postgres "$PG_ROOT"
  local redis_conf_changed=0 kafka_conf_changed=0
  write_redis_conf && redis_conf_changed=1
  write_kafka_conf && kafka_conf_changed=1
  format_kafka_storage
  write_supervisor_conf "$PG_ROOT"
  local airflow_stopped="" changes
  if supervisord_running; then
    changes=$(supervisorctl reread) || die "supervisorctl reread failed: $changes"
    # A change restarts what it touches (supervisorctl update stops a changed group, lowest priority first, and
    # adds it again; a changed Redis or Kafka file restarts that program below). The Airflow programs that run
    # stop first, as in make stop, so that no task loses its database or broker mid-batch, and those start
    # again once the services are back.
    if grep -qE ': (changed|disappeared)$' <<<"$changes" || [ $((redis_conf_changed + kafka_conf_changed)) -gt 0 ]
    then
      airflow_stopped=$(supervisorctl status 'airflow:*' | awk '$2 == "RUNNING" {print $1}' | tr '\n' ' ') || true
    fi
    if [ -n "$airflow_stopped" ]; then
      say "stopping Airflow while the services take their new configuration"
      trap 'echo "==> Airflow was stopped for the change and stays stopped: make run starts it again" >&2' EXIT
      # shellcheck disable=SC2086 # one argument per program
      stop_airflow_programs $airflow_stopped
    fi
    supervisorctl update >/dev/null
    if [ "$redis_conf_changed" -eq 1 ] && program_running services:redis; then
      supervisorctl restart services:redis >/dev/null
    fi
    if [ "$kafka_conf_changed" -eq 1 ] && program_running services:kafka; then
      supervisorctl restart services:kafka >/dev/null
    fi
  else
    "$LEDGERFLOW_VENV/bin/supervisord" -c "$SUPERVISOR_CONF"
    wait_for supervisord 20 supervisord_running
  fi

  start_program services:postgres
  start_program services:redis
  start_program services:kafka
  wait_for PostgreSQL 60 pg_admin -d postgres -c 'SELECT 1'
  # Redis answers LOADING, not PONG, while it reads its append-only file back (48 s for a few million records)
  wait_for Redis 600 redis_ready
  bootstrap_databases
  python "$STACK_DIR/migrate.py" --seed
  wait_for Kafka 120 port_open "$LEDGERFLOW_KAFKA_PORT"
  python "$STACK_DIR/create_topics.py" --partitions "$LEDGERFLOW_TOPIC_PARTITIONS" $LEDGERFLOW_TOPICS
  if [ -n "$airflow_stopped" ]; then
    # shellcheck disable=SC2086
    supervisorctl start $airflow_stopped >/dev/null
    trap - EXIT
  fi
}

api_server_healthy() { curl -fsS -m 5 "http://127.0.0.1:$LEDGERFLOW_AIRFLOW_PORT/api/v2/monitor/health"; }

start_airflow() {
  mkdir -p "$AIRFLOW_HOME"
  say "migrating Airflow's metadata database"
  airflow db migrate >"$LOG_DIR/airflow-db-migrate.log" 2>&1 || die "airflow db migrate failed; see $LOG_DIR/airflow-db-migrate.log"
  (
    umask 077
    printf '{"%s": "%s"}\n' "$LEDGERFLOW_AIRFLOW_ADMIN_USER" "$LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD" \
      >"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
  )
  local program
  for program in api-server scheduler dag-processor triggerer; do start_program "airflow:airflow-$program"; done
  wait_for "the Airflow API server" 180 api_server_healthy
  # The DAGs exist for the API and the CLI once the dag-processor has parsed them, a few seconds after a first
  # start: a command that pauses or unpauses them (make test's first fixture, make run) would find none before.
  wait_for "the pipeline's DAGs in Airflow" 120 bash -c \
    "airflow dags list -o plain 2>/dev/null | grep -cE '^ledgerflow_(produce|clear|settle|produce_window)\b' | grep -qx 4"
}

cmd_up() {
  local with_airflow=1
  [ "${1:-}" = "--no-airflow" ] && with_airflow=0
  require_free_ports $with_airflow
  cmd_install
  start_services
  [ $with_airflow -eq 1 ] && start_airflow
  cmd_status
  [ $with_airflow -eq 1 ] && where_to_look
  return 0
}

where_to_look() {
  cat <<EOF

Airflow UI   http://localhost:$LEDGERFLOW_AIRFLOW_PORT  (user $LEDGERFLOW_AIRFLOW_ADMIN_USER, password: LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD in .env)
PostgreSQL   make psql  (database $LEDGERFLOW_DB_NAME on 127.0.0.1:$LEDGERFLOW_PG_PORT as $LEDGERFLOW_DB_USER)
Redis        make redis-cli  (127.0.0.1:$LEDGERFLOW_REDIS_PORT)
Kafka        127.0.0.1:$LEDGERFLOW_KAFKA_PORT, topics $LEDGERFLOW_TOPICS
Logs         $LOG_DIR
Stop         make stop
EOF
}

PIPELINE_DAGS='^ledgerflow_(produce|clear|settle)$'

# After `up`, which waits for the DAGs to be parsed.
cmd_pipeline() {
  local verb
  case "${1:-}" in on) verb=unpause ;; off) verb=pause ;; *) die "usage: stack.sh pipeline on|off" ;; esac
  airflow dags "$verb" --treat-dag-id-as-regex -y "$PIPELINE_DAGS" >/dev/null
  say "pipeline DAGs ${verb}d: ledgerflow_produce, ledgerflow_clear, ledgerflow_settle"
}

# The audit trail and the journal are append-only, so data is not deleted row by row: the pipeline database
# is dropped and made again as `up` makes it (schema and sample data), the topics are recreated and the
# records' Redis database is emptied. Airflow, its metadata and the DAGs' pause state stay; a task that runs
# meanwhile fails, and the next runs start from the new data.
# The database comes back last: while it is missing every run fails, so the pipeline cannot take up the sample
# data before the topics and Redis are new too. Made first, its sample transactions could be published into
# topics about to go, or settled before Redis was emptied, which took their records away.
cmd_reset() {
  program_running services:postgres && program_running services:redis && program_running services:kafka ||
    die "the stack is not up: start it with make run (or stack.sh up)"
  [ "$LEDGERFLOW_DB_NAME" != "$LEDGERFLOW_AIRFLOW_DB_NAME" ] || die "LEDGERFLOW_DB_NAME is Airflow's database"
  PG_ROOT=$(pg_root)
  say "dropping database $LEDGERFLOW_DB_NAME"
  pg_admin -d postgres <<EOF
SELECT format('DROP DATABASE IF EXISTS %I WITH (FORCE)', '$LEDGERFLOW_DB_NAME') \gexec
EOF
  local gone="database $LEDGERFLOW_DB_NAME is dropped: run the reset again"
  python "$STACK_DIR/create_topics.py" --recreate --partitions "$LEDGERFLOW_TOPIC_PARTITIONS" $LEDGERFLOW_TOPICS ||
    die "the topics were not recreated; $gone"
  redis_cli -n "${LEDGERFLOW_REDIS_DB:-0}" flushdb >/dev/null || die "Redis was not emptied; $gone"
  redis_cli bgrewriteaof >/dev/null  # else the append-only file keeps the records on disk until it grows
  say "creating database $LEDGERFLOW_DB_NAME"
  bootstrap_databases
  python "$STACK_DIR/migrate.py" --seed
  say "reset: database $LEDGERFLOW_DB_NAME holds the schema and sample data, the topics are empty," \
    "Redis database ${LEDGERFLOW_REDIS_DB:-0} is empty"
}

# An Airflow program killed outright (not stopped) leaves its children behind: the scheduler its executor's workers,
# each waiting for work for ever or supervising a task, and the scheduler and triggerer their log servers, which
# keep the log port. They stay in the dead program's process group, which supervisord's stop does not reach: a
# group whose leader is gone. The tasks those workers started run on in groups of their own.

# Whether process $1 is one of this checkout's Airflow processes: titled `airflow ...` and running on its
# virtualenv's libraries (its environment is not there to read: setproctitle wrote its title over it).
is_this_checkouts_airflow_process() {
  local title
  title=$(tr -s '\0 ' '  ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ "$title" == "airflow "* ]] && grep -qF " $(realpath -m "$LEDGERFLOW_VENV")/" 2>/dev/null "/proc/$1/maps"
}

# "pid parent group" of every process.
process_table() {
  local stat rest parent group
  for stat in /proc/[0-9]*/stat; do
    rest=$(cat 2>/dev/null "$stat") || continue
    read -r _ parent group _ <<<"${rest##*) }"
    stat=${stat#/proc/}; echo "${stat%/stat} $parent $group"
  done
}

# Ends process group $1, and the groups its members started for their tasks (a task's process leads a group of its
# own: unsupervised, it would run on beside its retry). Waits until they are gone: the next scheduler binds the log
# port the old one's log server held.
end_process_group() {
  local group="$1" groups deadline
  kill -STOP -- "-$group" 2>/dev/null || true  # no member starts another task between the look and the kill
  groups=$(process_table | awk -v group="$group" '$3 == group { member[$1] = 1 } { parent[$1] = $2; pgrp[$1] = $3 }
    END { for (pid in parent) if (member[parent[pid]] && pgrp[pid] == pid) print pid; print group }')
  for group in $groups; do kill -KILL -- "-$group" 2>/dev/null || true; done
  deadline=$((SECONDS + 10))
  for group in $groups; do
    while kill -0 -- "-$group" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill -0 -- "-$group" 2>/dev/null && say "process group $group has not ended 10 s after SIGKILL"
  done
  return 0
}

# Every such group on the machine, of this checkout's Airflow processes, for `down` and `leftovers`.
stop_leftover_airflow_processes() {
  local pid parent group ended=" " own_group
  own_group=$(process_table | awk -v pid=$$ '$1 == pid { print $3 }')
  while read -r pid parent group; do
    [ "$group" != "$own_group" ] && [ ! -e "/proc/$group" ] && [[ "$ended" != *" $group "* ]] &&
      is_this_checkouts_airflow_process "$pid" || continue
    say "ending what a killed Airflow program left (process group $group:" \
      "$(tr -s '\0 ' '  ' 2>/dev/null <"/proc/$pid/cmdline"))"
    end_process_group "$group"
    ended+="$group "
  done < <(process_table)
}

# supervisord starts each Airflow program through this, and starts one killed outright again at once. The group
# its last start led is ended first if its leader is gone and it still holds this checkout's Airflow processes:
# that program's leftovers (a group's id is not reused while the group has members), which would keep the log
# port from the new one, and memory.
exec_airflow_program() {
  local record="$LEDGERFLOW_STATE/supervisor/airflow-$1.group" group pid
  group=$(cat 2>/dev/null "$record") || group=
  if [[ "$group" =~ ^[0-9]+$ ]] && [ ! -e "/proc/$group" ]; then
    for pid in $(process_table | awk -v group="$group" '$3 == group { print $1 }'); do
      if is_this_checkouts_airflow_process "$pid"; then
        say "ending what a killed Airflow program left (process group $group: airflow $1)"
        end_process_group "$group"
        break
      fi
    done
  fi
  echo $$ >"$record"
  exec "$LEDGERFLOW_VENV/bin/airflow" "$@"
}

# Stop the given Airflow programs (supervisor's names; one not running is no error), the API server last: supervisord
# stops the programs of a group, or of one stop, all at once, and the tasks the scheduler waits for report their end
# to the API server. Stopping the scheduler sends SIGTERM to its process group (stopasgroup), which its workers pass
# on to the tasks they run: a drain then ends at its next wait (on_kill).
stop_airflow_programs() {
  local program first=() last=()
  for program in "$@"; do
    if [ "$program" = airflow:airflow-api-server ]; then last+=("$program"); else first+=("$program"); fi
  done
  if [ ${#first[@]} -gt 0 ]; then supervisorctl stop "${first[@]}" >/dev/null || return; fi
  if [ ${#last[@]} -gt 0 ]; then supervisorctl stop "${last[@]}" >/dev/null || return; fi
}

cmd_down() {
  if supervisord_running; then
    say "stopping every component"
    stop_airflow_programs airflow:airflow-scheduler airflow:airflow-triggerer airflow:airflow-dag-processor \
      airflow:airflow-api-server || say "could not stop Airflow's programs in order: stopping everything at once"
    supervisorctl shutdown >/dev/null
    wait_for "supervisord shutdown" 120 bash -c "! [ -S '$LEDGERFLOW_STATE/supervisor/supervisor.sock' ] || ! kill -0 \$(cat '$LEDGERFLOW_STATE/supervisor/supervisord.pid' 2>/dev/null) 2>/dev/null"
  fi
  rm -f "$LEDGERFLOW_STATE"/supervisor/airflow-*.group  # the groups they name are gone
  stop_leftover_airflow_processes
  say "stopped"
}

cmd_status() {
  printf '%-22s %-5s %-6s %s\n' COMPONENT STATE PORT DATA
  local line program port data state
  for line in \
    "services:postgres|$LEDGERFLOW_PG_PORT|$(pg_root)/data" \
    "services:redis|$LEDGERFLOW_REDIS_PORT|$REDIS_DATA" \
    "services:kafka|$LEDGERFLOW_KAFKA_PORT|$KAFKA_DATA" \
    "airflow:airflow-api-server|$LEDGERFLOW_AIRFLOW_PORT|$AIRFLOW_HOME (metadata in database $LEDGERFLOW_AIRFLOW_DB_NAME)" \
    "airflow:airflow-scheduler|-|$AIRFLOW_HOME" \
    "airflow:airflow-dag-processor|-|$AIRFLOW_HOME" \
    "airflow:airflow-triggerer|-|$AIRFLOW_HOME"; do
    IFS='|' read -r program port data <<<"$line"
    state=down
    program_running "$program" && state=up
    printf '%-22s %-5s %-6s %s\n' "${program#*:}" "$state" "$port" "$data"
  done
}

case "${1:-}" in
  install) cmd_install ;;
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  migrate) python "$STACK_DIR/migrate.py" ;;
  pipeline) shift; cmd_pipeline "$@" ;;
  reset) cmd_reset ;;
  leftovers) stop_leftover_airflow_processes ;;
  airflow) shift; exec_airflow_program "$@" ;;
esac
