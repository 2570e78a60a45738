"""The benchmark's CPU accounting: which component a process is, and what a process spends in a window."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from include.bench.cpu import CpuMeter, component


@pytest.mark.parametrize(("cmdline", "expected"), [
    ("postgres: ledgerflow financial_db 127.0.0.1(51234) UPDATE", "PostgreSQL"),
    ("postgres: ledgerflow financial_db [local] idle in transaction", "PostgreSQL"),
    ("postgres: parallel worker for PID 4242", "PostgreSQL"),
    ("postgres: walwriter", "PostgreSQL upkeep"),
    ("postgres: autovacuum worker financial_db", "PostgreSQL upkeep"),
    ("/usr/lib/postgresql/15/bin/postgres -D /work/.stack/postgres/data -c port=5432", "PostgreSQL upkeep"),
    ("postgres: airflow airflow 127.0.0.1(54278) idle", "Airflow"),
    ("airflow worker -- 0199b6a5-7c1e-7d2c-9a61-5d2f1c0e8b1a", "tasks"),
    ("airflow worker -- LocalExecutor: <idle>", "tasks"),
    ("/work/.venv/bin/python3 /work/.venv/bin/airflow scheduler", "Airflow"),
    ("airflow api_server -- host:127.0.0.1 port:8080", "Airflow"),
    ("/opt/airflow/venv/bin/python some_other_tool.py", "other"),
    ("java -Xmx1g -cp /work/.stack/kafka/libs/* kafka.Kafka /work/.stack/kafka/server.properties", "Kafka"),
    ("redis-server 127.0.0.1:6379", "Redis"),
    ("", "kernel"),
    ("/usr/sbin/sshd -D", "other"),
])
def test_each_process_is_put_in_its_component(cmdline, expected):
    assert component(cmdline, "airflow") == expected


# Half a second of CPU in a process named like a PostgreSQL backend, so its CPU is told from the rest of the
# machine's: the component has nothing else to do while the unit tests run.
BURNER = ["postgres: ledgerflow financial_db [local] burner", "-c",
          "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"]


def _burner() -> subprocess.Popen:
    return subprocess.Popen(BURNER, executable=sys.executable)


def test_the_cpu_a_process_spends_in_the_window_is_counted():
    with CpuMeter("airflow", interval=0.05) as meter:
        start = meter.mark()
        _burner().wait()  # it ends before the window does
        use = meter.since(start)
    assert 0.45 <= use.seconds["PostgreSQL"] <= 0.6
    assert 0 < use.busy <= 1


def test_a_process_that_ended_before_the_window_is_not_counted():
    with CpuMeter("airflow", interval=0.05) as meter:
        _burner().wait()
        time.sleep(0.1)  # sampled after it ended too
        use = meter.since(meter.mark())
    assert use.seconds.get("PostgreSQL", 0) < 0.1


def test_a_process_that_ended_but_was_not_reaped_keeps_its_component():
    """A zombie keeps its CPU time but loses its command line."""
    with CpuMeter("airflow", interval=0.05) as meter:
        start = meter.mark()
        burner = _burner()
        while Path(f"/proc/{burner.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.05)
        use = meter.since(start)
        burner.wait()
    assert use.seconds["PostgreSQL"] >= 0.45
    assert use.seconds.get("kernel", 0) < 0.1
