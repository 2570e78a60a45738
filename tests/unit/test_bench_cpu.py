"""The benchmark's CPU accounting: which component a process is, and the CPU a process spends is counted."""

import subprocess
import sys
import time

import pytest

from include.bench.cpu import CpuMeter, component


@pytest.mark.parametrize(("cmdline", "expected"), [
    ("postgres: ledgerflow financial_db 127.0.0.1(51234) UPDATE", "PostgreSQL"),
    ("postgres: ledgerflow financial_db [local] idle in transaction", "PostgreSQL"),
    ("postgres: walwriter", "PostgreSQL upkeep"),
    ("postgres: autovacuum worker financial_db", "PostgreSQL upkeep"),
    ("postgres: airflow airflow 127.0.0.1(54278) idle", "Airflow"),
    ("airflow worker -- 0199b6a5-7c1e-7d2c-9a61-5d2f1c0e8b1a", "tasks"),
    ("airflow worker -- LocalExecutor: <idle>", "tasks"),
    ("/work/.venv/bin/python3 /work/.venv/bin/airflow scheduler", "Airflow"),
    ("java -Xmx1g -cp /work/.stack/kafka/libs/* kafka.Kafka /work/.stack/kafka/server.properties", "Kafka"),
    ("redis-server 127.0.0.1:6379", "Redis"),
    ("", "kernel"),
    ("/usr/sbin/sshd -D", "other"),
])
def test_each_process_is_put_in_its_component(cmdline, expected):
    assert component(cmdline, "airflow") == expected


BURN_HALF_A_SECOND = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"


def test_the_cpu_a_process_spends_in_the_window_is_counted():
    with CpuMeter("airflow", interval=0.05) as meter:
        start, started_at = meter.mark(), time.monotonic()
        subprocess.run([sys.executable, "-c", BURN_HALF_A_SECOND], check=True)  # ends before the window does
        use, seconds = meter.since(start), time.monotonic() - started_at
    assert use.seconds["other"] >= 0.45  # the burner, and whatever else of the machine's ran meanwhile
    assert sum(use.seconds.values()) <= use.cores * seconds + 0.2  # each process rounded to whole ticks
    assert 0 < use.busy <= 1


def test_a_process_that_ended_before_the_window_is_not_counted():
    with CpuMeter("airflow", interval=0.05) as meter:
        subprocess.run([sys.executable, "-c", BURN_HALF_A_SECOND], check=True)
        time.sleep(0.1)  # sampled after it ended too
        start = meter.mark()
        use = meter.since(start)
    assert use.seconds.get("other", 0) < 0.2
