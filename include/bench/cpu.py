"""CPU time by component of the local stack, read from /proc (Linux): on a machine whose cores are all busy,
the CPU each component spends per transaction says what limits a figure and what a faster one would take.

Each process is put in one component by its command line (PostgreSQL names its processes after their role
and, for a backend, its user and database; Airflow names a task's process `airflow worker -- <id>`). Kernel
threads are "kernel"; "other" is the rest of the machine, which the stack shares. A background thread
samples every process's CPU time, so a process that ends within the window (a task run, a backend) counts up
to its last sample; one that lives less than a sampling interval is missed.
"""

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
KERNEL_THREAD = 0x00200000  # PF_KTHREAD, in the flags of /proc/[pid]/stat
# what the pipeline runs on; the rest (kernel, other, the benchmark itself) is the machine's
STACK = ("PostgreSQL", "PostgreSQL upkeep", "tasks", "Airflow", "Redis", "Kafka")


def component(cmdline: str, airflow_database: str) -> str:
    """The component of a process by its command line; a kernel thread's is empty."""
    if not cmdline:
        return "kernel"
    words = cmdline.split()
    if words[0] == "postgres:":
        # A backend is "postgres: <user> <database> <client> <state>", the client "host(port)" or "[local]";
        # Airflow's metadata work is Airflow's, and a parallel worker works for a backend. The rest
        # (autovacuum, WAL writer, checkpointer, background writer) catches up on what backends wrote.
        if len(words) > 3 and (words[3].endswith(")") or words[3] == "[local]"):
            return "Airflow" if words[2] == airflow_database else "PostgreSQL"
        return "PostgreSQL" if words[1:3] == ["parallel", "worker"] else "PostgreSQL upkeep"
    if os.path.basename(words[0]) == "postgres":  # the postmaster
        return "PostgreSQL upkeep"
    if cmdline.startswith("airflow worker --"):  # a task, or the executor process supervising one
        return "tasks"
    if os.path.basename(words[0]) == "java" and "kafka.Kafka" in words:
        return "Kafka"
    if os.path.basename(words[0]) == "redis-server":
        return "Redis"
    if any(os.path.basename(word) == "airflow" for word in words[:2]):  # airflow ..., python .../bin/airflow ...
        return "Airflow"
    return "other"


@dataclass(frozen=True, slots=True)
class _Reading:
    ticks: int  # user + system CPU ticks so far
    cmdline: str | None  # "" for a kernel thread; None once a process has ended (a zombie has none)


def _read_processes() -> dict[tuple[int, int], _Reading]:
    """(pid, start time) -> reading, for every process still readable: the start time tells a process from a
    later one that was given the same pid."""
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended meanwhile
            continue
        # field 3 on, after the command name in parentheses (which may hold spaces): flags are field 9,
        # utime and stime 14 and 15, the start time 22
        fields = stat[stat.rindex(")") + 2:].split()
        kernel_thread = int(fields[6]) & KERNEL_THREAD
        processes[int(entry.name), int(fields[19])] = _Reading(
            int(fields[11]) + int(fields[12]), "" if kernel_thread else cmdline or None)
    return processes


def _machine_ticks() -> tuple[int, int]:
    """(busy, all) ticks of all cores since boot."""
    user, nice, system, idle, iowait, *rest = (int(v) for v in Path("/proc/stat").read_text().split()[1:11])
    total = user + nice + system + idle + iowait + sum(rest[:3])  # irq, softirq, steal; guest time is in user
    return total - idle - iowait, total


@dataclass(frozen=True)
class CpuUse:
    seconds: dict[str, float]  # CPU seconds by component
    busy: float  # share of all cores' time that was busy
    cores: int
    wall_seconds: float

    def per_transaction(self, count: int) -> str:
        def listed(names):
            return ", ".join(f"{name} {self.seconds[name] / count * 1e6:,.0f}"
                             for name in sorted(names, key=lambda name: -self.seconds[name]))
        stack = [name for name in self.seconds if name in STACK]
        rest = [name for name in self.seconds if name not in STACK]
        return (f"the stack {sum(self.seconds[name] for name in stack) / count * 1e6:,.0f} µs per transaction "
                f"({listed(stack)}), the rest of the machine {listed(rest) or 'nothing'}; "
                f"over {self.wall_seconds:.1f} s the {self.cores} cores were {self.busy:.0%} busy")


@dataclass
class _Process:
    first_sample: int  # the sample it was first seen in
    ticks: int  # as last sampled
    cmdline: str  # as last read while it ran


@dataclass(frozen=True)
class Mark:
    """A moment to measure from: what every process had used then, and the machine."""
    sample: int
    ticks: dict[tuple[int, int], int]
    machine_ticks: tuple[int, int]
    at: float


class CpuMeter:
    """with CpuMeter(airflow_database) as meter: start = meter.mark(); ...; use = meter.since(start)"""

    def __init__(self, airflow_database: str, interval: float = 0.5):
        self.airflow_database, self.interval = airflow_database, interval
        self.processes: dict[tuple[int, int], _Process] = {}  # every process sampled so far
        self.samples = 0
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.sampler = threading.Thread(target=self._sample_until_stopped, name="cpu-meter", daemon=True)

    def __enter__(self) -> "CpuMeter":
        self.sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.sampler.join()

    def _sample(self) -> tuple[int, dict[tuple[int, int], int]]:
        with self.lock:  # one sample at a time, so they are applied in the order they were read
            current = _read_processes()
            self.samples += 1
            for key, reading in current.items():
                known = self.processes.get(key)
                if known is None:
                    pid = key[0]
                    self.processes[key] = _Process(self.samples, reading.ticks,
                                                   reading.cmdline if reading.cmdline is not None else f"pid {pid}")
                else:
                    known.ticks = reading.ticks
                    if reading.cmdline is not None:
                        known.cmdline = reading.cmdline
            return self.samples, {key: reading.ticks for key, reading in current.items()}

    def _sample_until_stopped(self) -> None:
        while not self.stopped.wait(self.interval):
            self._sample()

    def mark(self) -> Mark:
        return Mark(*self._sample(), _machine_ticks(), time.monotonic())

    def since(self, start: Mark) -> CpuUse:
        """CPU used by each component from the `start` mark to now."""
        end = self.mark()
        seconds: Counter = Counter()
        own = os.getpid()
        with self.lock:
            for key, process in self.processes.items():
                if key in start.ticks:  # ran when the window started
                    ticks = process.ticks - start.ticks[key]
                elif process.first_sample > start.sample:  # started within it
                    ticks = process.ticks
                else:  # ended before it
                    continue
                name = "benchmark" if key[0] == own else component(process.cmdline, self.airflow_database)
                seconds[name] += ticks / TICKS_PER_SECOND
        (busy_before, total_before), (busy_now, total_now) = start.machine_ticks, end.machine_ticks
        return CpuUse({name: s for name, s in seconds.items() if s > 0},
                      (busy_now - busy_before) / max(total_now - total_before, 1), os.cpu_count() or 1,
                      end.at - start.at)
