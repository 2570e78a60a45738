"""The interpreter settings of a draining task: what existed before is frozen, the young generation is
larger, cycles made meanwhile are still collected, threads switch sooner, and everything is put back."""

import gc
import sys
import weakref

from ledgerflow.operators.context import batch_friendly_gc, peak_memory_mb, quick_thread_switches, reset_peak_memory


class Node:
    def __init__(self):
        self.peer = self


def test_a_drain_freezes_what_exists_and_widens_the_young_generation_then_restores_both():
    before = gc.get_threshold()
    with batch_friendly_gc(young_generation=50_000):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (50_000, *before[1:])
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_reference_cycles_made_during_a_drain_are_still_collected():
    with batch_friendly_gc():
        cycle = Node()
        alive = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert alive() is None, "a cycle made during the drain must not be frozen with what existed before"


def test_a_drain_switches_threads_sooner_then_restores_the_interval():
    before = sys.getswitchinterval()
    with quick_thread_switches(0.001):
        assert sys.getswitchinterval() == 0.001
    assert sys.getswitchinterval() == before


def test_a_tasks_peak_memory_starts_from_what_the_process_holds_when_the_task_starts():
    reset_peak_memory()
    before = peak_memory_mb()
    block = bytearray(64 * 1024 * 1024)
    block[::4096] = b"\1" * len(range(0, len(block), 4096))  # touch every page: resident, not only reserved
    assert peak_memory_mb() >= before + 60
    del block
    reset_peak_memory()  # the peak of an earlier task (or of `dags test` before the task) is not the task's
    assert peak_memory_mb() < before + 30
