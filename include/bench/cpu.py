"""CPU time by component of the local stack, read from /proc (Linux): on a machine whose cores are all busy,
the CPU each component spends per transaction says what limits a figure and what a faster one would take.

Each process is put in one component by its command line (PostgreSQL names its processes after their role
and, for a backend, its user and database; Airflow names a task's process `airflow worker -- <id>`); "other"
is the rest of the machine, which the stack shares. A
background thread samples every process's CPU time, so a process that ends within the window (a task run, a
backend) counts up to its last sample; one that lives less than a sampling interval is missed.
"""

import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def component(cmdline: str, airflow_database: str) -> str:
    if not cmdline:  # a kernel thread: page reclaim, writeback, memory monitoring
        return "kernel"
    if cmdline.startswith("postgres:"):
        # A backend is "postgres: <user> <database> <client> <state>", the client "host(port)" or "[local]";
        # Airflow's metadata work is Airflow's. The rest (autovacuum, WAL writer, checkpointer, background
        # writer) catches up on what the backends wrote, often after they are done.
        fields = cmdline.split()
        if len(fields) > 3 and (fields[3].endswith(")") or fields[3] == "[local]"):
            return "Airflow" if fields[2] == airflow_database else "PostgreSQL"
        return "PostgreSQL upkeep"
    if cmdline.startswith("airflow worker --"):  # a task, or the executor process supervising one
        return "tasks"
    if cmdline.startswith("java") and "kafka.Kafka" in cmdline.split():
        return "Kafka"
    if cmdline.startswith("redis-server"):
        return "Redis"
    if "airflow" in cmdline:
        return "Airflow"
    return "other"


def _process_ticks() -> dict[int, tuple[int, str]]:
    """pid -> (user + system ticks, command line) of every process still readable."""
    processes = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the command name in parentheses may hold spaces
        processes[int(entry.name)] = (int(fields[11]) + int(fields[12]), cmdline)
    return processes


def _machine_ticks() -> tuple[int, int]:
    """(busy, all) ticks of all cores since boot."""
    user, nice, system, idle, iowait, *rest = (int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:])
    total = user + nice + system + idle + iowait + sum(rest[:3])  # irq, softirq, steal; guest time is in user
    return total - idle - iowait, total


@dataclass(frozen=True)
class CpuUse:
    seconds: dict[str, float]  # CPU seconds by component
    busy: float  # share of all cores' time that was busy
    cores: int

    def per_transaction(self, count: int) -> str:
        parts = ", ".join(f"{name} {seconds / count * 1e6:,.0f}"
                          for name, seconds in sorted(self.seconds.items(), key=lambda item: -item[1]))
        return (f"CPU per transaction: {sum(self.seconds.values()) / count * 1e6:,.0f} µs ({parts}); "
                f"the {self.cores} cores were {self.busy:.0%} busy")


@dataclass
class _Process:
    first_sample: int  # the sample it was first seen in
    ticks: int  # CPU ticks as last sampled
    cmdline: str


class CpuMeter:
    """with CpuMeter(airflow_database) as meter: start = meter.mark(); ...; use = meter.since(start)"""

    def __init__(self, airflow_database: str, interval: float = 0.5):
        self.airflow_database, self.interval = airflow_database, interval
        self.processes: dict[int, _Process] = {}  # every process sampled so far, as last sampled
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

    def _sample(self) -> tuple[int, dict[int, int]]:
        current = _process_ticks()
        with self.lock:
            self.samples += 1
            for pid, (ticks, cmdline) in current.items():
                known = self.processes.get(pid)
                if known is None or ticks < known.ticks:  # new, or a new process under an ended one's pid
                    self.processes[pid] = _Process(self.samples, ticks, cmdline)
                else:
                    known.ticks, known.cmdline = ticks, cmdline
            return self.samples, {pid: ticks for pid, (ticks, _) in current.items()}

    def _sample_until_stopped(self) -> None:
        while not self.stopped.wait(self.interval):
            self._sample()

    def mark(self) -> tuple[int, dict[int, int], tuple[int, int]]:
        return *self._sample(), _machine_ticks()

    def since(self, start) -> CpuUse:
        """CPU used by each component from the `start` mark to now."""
        (start_sample, ticks_at_start, (busy_before, total_before)), (_, _, (busy_now, total_now)) = start, self.mark()
        seconds: Counter = Counter()
        own = os.getpid()
        with self.lock:
            for pid, process in self.processes.items():
                if process.first_sample > start_sample:  # started within the window
                    ticks = process.ticks
                elif pid in ticks_at_start:  # ran when the window started
                    ticks = process.ticks - ticks_at_start[pid]
                else:  # ended before it
                    continue
                name = "benchmark" if pid == own else component(process.cmdline, self.airflow_database)
                seconds[name] += ticks / TICKS_PER_SECOND
        return CpuUse({name: s for name, s in seconds.items() if s > 0},
                      (busy_now - busy_before) / max(total_now - total_before, 1), os.cpu_count() or 1)
