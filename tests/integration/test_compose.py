"""docker-compose.yaml describes the same system as the local stack.

There is no Docker engine here, so this checks what can be checked without one: the file parses,
every service the pipeline needs is there, and its connections, databases, topics and versions agree
with the local stack's (include/stack/*) and requirements.txt.
"""

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from airflow.models.connection import Connection

from tests.conftest import REPO_ROOT

AIRFLOW_SERVICES = ["airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"]
REQUIRED_SERVICES = ["postgres", "redis", "kafka", *AIRFLOW_SERVICES, "pgadmin", "redis-commander", "kafka-ui"]
VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")
AIRFLOW_DOCKERFILE = REPO_ROOT / "include" / "docker" / "airflow.Dockerfile"


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())


def interpolate(value: str) -> str:
    """Substitute ${VAR}, ${VAR:-default} and ${VAR:?error} as docker compose does, from this environment."""
    def substitute(match):
        name, kind, rest = match.groups()
        if name in os.environ:
            return os.environ[name]
        assert kind == "-", f"${{{name}}} is required by docker-compose.yaml but not set"
        return rest
    return VARIABLE.sub(substitute, value)


def local_connections() -> dict[str, Connection]:
    return {key: Connection(uri=value) for key, value in os.environ.items() if key.startswith("AIRFLOW_CONN_")}


def words(value) -> str:
    """A command, entrypoint or healthcheck test, given as a string or a list, as one string."""
    if value is None:
        return ""
    return value if isinstance(value, str) else " ".join(value)


def seconds(duration: str) -> float:
    """A compose duration (600s, 10m, 1m30s) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def requirement_pins() -> dict[str, str]:
    return dict(line.split("==") for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))


def dockerfile_pins() -> dict[str, str]:
    return dict(re.findall(r'"([\w-]+)==([\w.]+)"', AIRFLOW_DOCKERFILE.read_text()))


def published_ports(service: dict) -> dict[int, int]:
    """container port -> host port."""
    mapping = {}
    for entry in service.get("ports", []):
        *_, host, container = interpolate(entry).split(":")
        mapping[int(container)] = int(host)
    return mapping


def test_every_service_the_pipeline_needs_is_there(compose):
    assert set(REQUIRED_SERVICES) <= set(compose["services"]), sorted(compose["services"])


def test_airflow_services_define_the_same_connections_as_the_local_stack(compose):
    local = local_connections()
    for name in AIRFLOW_SERVICES:
        environment = compose["services"][name]["environment"]
        compose_conn_ids = {key for key in environment if key.startswith("AIRFLOW_CONN_")}
        assert compose_conn_ids == set(local), name


@pytest.mark.parametrize("conn_var", ["AIRFLOW_CONN_LEDGERFLOW_POSTGRES", "AIRFLOW_CONN_LEDGERFLOW_REDIS"])
def test_database_connections_agree_with_the_local_stack(compose, conn_var):
    local = local_connections()[conn_var]
    in_compose = Connection(uri=interpolate(compose["services"]["airflow-scheduler"]["environment"][conn_var]))

    assert (in_compose.conn_type, in_compose.login, in_compose.password, in_compose.schema) == (
        local.conn_type, local.login, local.password, local.schema)
    target = compose["services"][in_compose.host]  # the host is a compose service
    assert published_ports(target)[in_compose.port] == local.port, "the service is published on the local stack's port"


def test_kafka_connection_reaches_the_broker_inside_and_outside_compose(compose):
    local_bootstrap = local_connections()["AIRFLOW_CONN_LEDGERFLOW_KAFKA"].extra_dejson["bootstrap.servers"]
    in_compose = Connection(uri=interpolate(compose["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_LEDGERFLOW_KAFKA"]))
    kafka = compose["services"]["kafka"]["environment"]

    advertised = interpolate(kafka["KAFKA_ADVERTISED_LISTENERS"])
    assert in_compose.extra_dejson["bootstrap.servers"] in advertised
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"], "KRaft mode, no ZooKeeper"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    local_port = int(local_bootstrap.rsplit(":", 1)[1])
    assert f"localhost:{local_port}" in advertised
    assert local_port in published_ports(compose["services"]["kafka"]).values()


def test_every_stateful_service_keeps_its_data_in_its_volume(compose):
    """Recreating a container keeps the topics, the ledger and the records together, as the local stack does."""
    services = compose["services"]
    mounts = {name: {volume.split(":")[1] for volume in services[name]["volumes"] if not volume.startswith(".")}
              for name in ("postgres", "redis", "kafka")}
    assert mounts == {"postgres": {"/var/lib/postgresql/data"}, "redis": {"/data"}, "kafka": {"/var/lib/kafka/data"}}
    assert services["kafka"]["environment"]["KAFKA_LOG_DIRS"] == "/var/lib/kafka/data"
    assert "--appendonly yes" in words(services["redis"]["command"])
    assert "--appendfsync always" in words(services["redis"]["command"]), "synced before settle commits offsets"


def test_airflow_metadata_database_matches_the_local_stack(compose):
    url = interpolate(compose["services"]["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    local_url = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert url.split("@")[0] == local_url.split("@")[0], "same driver, user and password"
    assert url.rsplit("/", 1)[1] == local_url.rsplit("/", 1)[1], "same database name"


def test_the_scheduler_takes_up_a_dead_or_stuck_task_as_soon_as_on_the_local_stack(compose):
    recovery = ("AIRFLOW__SCHEDULER__", "AIRFLOW__CORE__EXECUTOR")
    settings = {key: value for key, value in compose["services"]["airflow-scheduler"]["environment"].items()
                if key.startswith(recovery)}
    assert settings == {key: value for key, value in os.environ.items() if key.startswith(recovery)}
    assert settings  # the local stack's settings are there to compare


def test_init_creates_the_same_topics_and_schema_with_the_project_commands(compose):
    init = compose["services"]["airflow-init"]
    script = init["command"][-1]
    assert "include/stack/migrate.py --seed" in script
    assert "include/stack/create_topics.py" in script
    for topic in os.environ["LEDGERFLOW_TOPICS"].split():
        assert topic in script
    assert interpolate(init["environment"]["LEDGERFLOW_TOPIC_PARTITIONS"]) == os.environ["LEDGERFLOW_TOPIC_PARTITIONS"]


def test_images_run_the_versions_the_local_stack_pins(compose):
    pins = requirement_pins()
    assert f"apache/airflow:{pins['apache-airflow']}-" in AIRFLOW_DOCKERFILE.read_text()
    for package, version in dockerfile_pins().items():
        assert pins[package] == version, package

    pom = ET.parse(REPO_ROOT / "include" / "stack" / "pom.xml").getroot()
    kafka_version = pom.find("{http://maven.apache.org/POM/4.0.0}properties/{http://maven.apache.org/POM/4.0.0}kafka.version").text
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{kafka_version}"


def test_compose_holds_no_credentials(compose):
    text = (REPO_ROOT / "docker-compose.yaml").read_text()
    for name in ("LEDGERFLOW_DB_PASSWORD", "LEDGERFLOW_REDIS_PASSWORD", "LEDGERFLOW_AIRFLOW_DB_PASSWORD"):
        assert os.environ[name] not in text
    assert not re.search(r"PASSWORD: (?!\$\{)", text), "every password comes from .env"


def test_a_service_that_exits_is_started_again_as_supervisord_does_locally(compose):
    services = compose["services"]
    assert {name: services[name].get("restart") for name in ["postgres", "redis", "kafka", *AIRFLOW_SERVICES]} == {
        **{name: "unless-stopped" for name in ["postgres", "redis", "kafka", *AIRFLOW_SERVICES]},
        "airflow-init": "no"}  # it runs once, before the others


def test_the_database_superuser_is_refused_over_the_network(compose):
    """As on the local stack, where it has the socket only: its password is the pipeline role's."""
    init = REPO_ROOT / "include" / "docker" / "postgres-init.sh"
    assert f"./{init.relative_to(REPO_ROOT)}:/docker-entrypoint-initdb.d/10-ledgerflow.sh:ro" in (
        compose["services"]["postgres"]["volumes"])
    assert compose["services"]["postgres"]["environment"]["POSTGRES_USER"] == "postgres"
    assert "sed -i '1i host all postgres all reject' \"$PGDATA/pg_hba.conf\"" in init.read_text()


def test_the_api_server_can_open_the_password_file_init_writes_as_root(compose):
    """Airflow's auth manager opens its password file for appending as the api-server starts, as the image's
    airflow user (uid 50000); init writes it as root on a volume Docker creates as root's."""
    init = compose["services"]["airflow-init"]
    script = init["command"][-1]
    password_file = init["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
    folder = password_file.rsplit("/", 1)[0]
    api_server = compose["services"]["airflow-apiserver"]
    assert init["user"] == "0:0" and "user" not in api_server
    assert f"airflow-auth:{folder}" in init["volumes"] and f"airflow-auth:{folder}" in api_server["volumes"]
    written, owned = script.index(f"> {password_file}"), script.index(f"chown -R 50000:0 {folder}")
    assert written < owned < script.index(f"chmod 600 {password_file}")


def test_the_broker_has_the_local_brokers_single_broker_settings(compose):
    """Every replication factor and minimum ISR the local broker sets, compose's sets alike: Kafka's defaults
    need more brokers than the one there is."""
    properties = dict(line.split("=", 1) for line in
                      (Path(os.environ["LEDGERFLOW_STATE"]) / "kafka" / "server.properties").read_text().splitlines()
                      if "=" in line and not line.startswith("#"))
    single_broker = {key: value for key, value in properties.items() if key.endswith((".replication.factor", ".min.isr"))}
    kafka = compose["services"]["kafka"]["environment"]
    assert single_broker
    assert {key: str(kafka.get("KAFKA_" + key.upper().replace(".", "_"))) for key in single_broker} == single_broker


def test_the_database_cluster_collates_as_the_local_one(compose, pg):
    collation = pg.execute("SELECT datcollate FROM pg_database WHERE datname = current_database()").fetchone()[0]
    assert f"--locale={collation}" in compose["services"]["postgres"]["environment"]["POSTGRES_INITDB_ARGS"].split()


def test_the_airflow_containers_take_every_setting_the_dags_read(compose):
    """A setting read by a DAG file (its schedule, its idle timeout) that compose did not pass on would keep its
    default there whatever the user set."""
    read = set()
    for dag_file in (REPO_ROOT / "dags").glob("*.py"):
        read |= set(re.findall(r"""os\.environ(?:\.get\(|\[)["'](LEDGERFLOW_\w+)""", dag_file.read_text()))
    assert read
    for name in AIRFLOW_SERVICES:
        environment = compose["services"][name]["environment"]
        assert read <= set(environment), name


def test_the_project_commands_reach_the_api_server_in_its_container(compose):
    """include/airflow_control.py (make redrive) logs in as the admin user at LEDGERFLOW_AIRFLOW_URL."""
    environment = compose["services"]["airflow-scheduler"]["environment"]
    host, port = environment["LEDGERFLOW_AIRFLOW_URL"].removeprefix("http://").split(":")
    assert host in compose["services"] and host == "airflow-apiserver"
    assert environment["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(f"http://{host}:{port}/")
    # the user the auth manager has, whose password init writes, and as the local stack names it
    user = interpolate(environment["LEDGERFLOW_AIRFLOW_ADMIN_USER"])
    assert user == os.environ["LEDGERFLOW_AIRFLOW_ADMIN_USER"]
    assert interpolate(environment["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]).startswith(f"{user}:")
    assert '"$$LEDGERFLOW_AIRFLOW_ADMIN_USER" "$$LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD" >' in (
        compose["services"]["airflow-init"]["command"][-1])
    assert environment["LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD"] == "${LEDGERFLOW_AIRFLOW_ADMIN_PASSWORD:?run make secrets}"


def test_the_airflow_image_pins_every_provider_the_local_stack_pins():
    """The base image brings providers of its own (common-*, smtp, standard) at its constraints' versions."""
    providers = {package: version for package, version in requirement_pins().items()
                 if package.startswith("apache-airflow-providers-")}
    in_image = dockerfile_pins()
    assert providers
    assert {package: in_image.get(package) for package in providers} == providers


def test_every_airflow_service_runs_one_image_built_once_from_the_docker_folder(compose):
    """Built by airflow-init alone (compose builds a build section once per service that has it), from
    include/docker alone: the checkout holds .venv and the local stack's data (.stack), which the Dockerfile
    does not need and Docker would otherwise send to the builder."""
    services = compose["services"]
    assert {services[name]["image"] for name in AIRFLOW_SERVICES} == {
        f"ledgerflow-airflow:{requirement_pins()['apache-airflow']}"}
    assert [name for name, service in services.items() if "build" in service] == ["airflow-init"]
    # no registry has it: the services that do not build it must not look for it there
    assert {services[name].get("pull_policy") for name in AIRFLOW_SERVICES} == {"never"}

    build = services["airflow-init"]["build"]
    assert (REPO_ROOT / build["context"]).resolve() == AIRFLOW_DOCKERFILE.parent
    assert (REPO_ROOT / build["context"] / build["dockerfile"]).resolve() == AIRFLOW_DOCKERFILE
    assert not re.search(r"^\s*(COPY|ADD)\s", AIRFLOW_DOCKERFILE.read_text(), re.MULTILINE | re.IGNORECASE), (
        "the build context holds the Dockerfile's folder only")


def test_airflow_logs_outlive_a_recreated_container_as_on_the_local_stack(compose):
    """The local stack keeps its task, triggerer and DAG processor logs in $AIRFLOW_HOME/logs, which survives a
    restart; compose's containers keep theirs in one volume, shared so that the api-server reads what the
    scheduler's tasks and the triggerer wrote, and handed to the airflow user (uid 50000) as the auth volume is."""
    airflow_home = os.environ["AIRFLOW_HOME"]
    local = os.environ.get("AIRFLOW__LOGGING__BASE_LOG_FOLDER", os.path.join(airflow_home, "logs"))
    folder = "/opt/airflow/" + os.path.relpath(local, airflow_home)  # the image's AIRFLOW_HOME
    services = compose["services"]
    volumes = set()
    for name in AIRFLOW_SERVICES:
        mounted = [volume.split(":")[0] for volume in services[name]["volumes"] if volume.split(":")[1] == folder]
        assert len(mounted) == 1, name
        volumes.add(mounted[0])
    assert len(volumes) == 1 and volumes <= set(compose["volumes"]), "one named volume, not a folder of the checkout"

    script = services["airflow-init"]["command"][-1]
    assert script.index("airflow db migrate") < script.index(f"chown -R 50000:0 {folder}")
    assert [name for name in AIRFLOW_SERVICES if "user" in services[name]] == ["airflow-init"]


def test_redis_may_take_as_long_to_load_its_records_as_on_the_local_stack(compose):
    """Redis answers LOADING while it reads its append-only file back; the Airflow services wait for it to be
    healthy, and fail ("dependency failed to start") if the healthcheck gives up first."""
    local_wait = int(re.search(r"^\s*wait_for Redis (\d+) ", (REPO_ROOT / "include" / "stack" / "stack.sh").read_text(),
                               re.MULTILINE).group(1))
    redis = compose["services"]["redis"]
    assert seconds(redis["healthcheck"]["start_period"]) >= local_wait
    for name in AIRFLOW_SERVICES:
        assert compose["services"][name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_no_password_is_on_a_command_line(compose):
    """docker inspect shows a container's command, entrypoint and healthcheck, and ps any process's arguments to
    every user of the host: secrets reach the containers in their environment, never through compose into a
    command (a `$$NAME` there is the container's shell's, expanded inside it)."""
    secret = re.compile(r"\$\{\w*(PASSWORD|SECRET|KEY)\w*")
    for name, service in compose["services"].items():
        for part in (service.get("command"), service.get("entrypoint"), service.get("healthcheck", {}).get("test")):
            assert not secret.search(words(part)), name


def test_redis_reads_its_password_from_its_standard_input(compose):
    """As the local stack's Redis reads it from a mode-600 file. Through the image's docker-entrypoint.sh, which
    drops root for the redis user when given redis-server; exec'd, so that redis-server is process 1 and gets
    docker stop's SIGTERM; `-` as its first argument, the only places (with the last) Redis reads stdin from."""
    redis = compose["services"]["redis"]
    assert redis["command"][:2] == ["sh", "-c"] and len(redis["command"]) == 3
    command_line, here_document = redis["command"][2].split(" <<EOF\n")
    assert command_line.startswith("exec docker-entrypoint.sh redis-server - ")
    assert "requirepass" not in command_line
    variable = re.fullmatch(r"requirepass \$\$(\w+)\nEOF\n", here_document).group(1)
    assert interpolate(redis["environment"][variable]) == os.environ["LEDGERFLOW_REDIS_PASSWORD"]

    # the healthcheck authenticates with the same password, in redis-cli's environment rather than -a
    test = words(redis["healthcheck"]["test"])
    assert f'REDISCLI_AUTH="$${variable}" redis-cli ping' in test
    assert not re.search(r"\s(-a|--pass|--user)\s", test)
