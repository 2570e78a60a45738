"""The stage benchmark's figures: a stage's rate is its transactions over its tasks' measured seconds, only for
runs that took the load once each, and repeated loads print each stage's median rate with the ranges."""

import pytest

from include.bench.pipeline_bench import print_medians, stage_figures, tally_problems


def summaries(produce_seconds: float, peak: float) -> dict[str, list[dict]]:
    return {"ledgerflow_produce": [{"published": 100_000, "seconds": produce_seconds, "peak_memory_mb": peak}],
            "ledgerflow_clear": [{"messages": 60_000, "seconds": 1.0, "peak_memory_mb": 400.0},
                                 {"messages": 40_000, "seconds": 1.0, "peak_memory_mb": 420.0}],
            "ledgerflow_settle": [{"messages": 100_000, "seconds": 4.0, "peak_memory_mb": 390.0}]}


def test_a_stage_adds_up_its_task_runs():
    assert stage_figures(summaries(2.0, 300.0)) == {"ledgerflow_produce": (1, 100_000, 2.0, 300.0),
                                                    "ledgerflow_clear": (2, 100_000, 2.0, 420.0),
                                                    "ledgerflow_settle": (1, 100_000, 4.0, 390.0)}


def test_runs_that_took_the_load_once_each_have_no_problem():
    taken_once = summaries(2.0, 300.0)
    taken_once["ledgerflow_clear"][0]["decided"], taken_once["ledgerflow_clear"][1]["decided"] = 60_000, 40_000
    taken_once["ledgerflow_settle"][0].update(settled=99_000, rejected_at_settlement=1_000)
    assert tally_problems(taken_once, 100_000) == []


@pytest.mark.parametrize(("stage", "change", "problem"), [
    # a retried attempt: its redelivered batches are duplicates, and the failed attempt's summary is gone
    ("ledgerflow_clear", {"messages": 70_000, "decided": 50_000, "duplicates": 20_000},
     "ledgerflow_clear messages 110,000, not 100,000"),
    ("ledgerflow_settle", {"settled": 90_000, "dead_lettered": 10_000},
     "ledgerflow_settle settled+rejected_at_settlement 90,000, not 100,000"),
    ("ledgerflow_produce", {"published": 99_999}, "ledgerflow_produce published 99,999, not 100,000")])
def test_runs_that_did_not_take_the_load_once_each_are_named(stage, change, problem):
    runs = summaries(2.0, 300.0)
    runs["ledgerflow_clear"][0]["decided"], runs["ledgerflow_clear"][1]["decided"] = 60_000, 40_000
    runs["ledgerflow_settle"][0].update(settled=100_000)
    runs[stage][0].update(change)
    assert problem in tally_problems(runs, 100_000)


def test_repeated_loads_print_each_stages_median_rate_and_ranges(capsys):
    # produce at 100,000 / 50,000 / 25,000 tx/s: the median is the middle run's, not the mean (58,333)
    print_medians("medians", [stage_figures(summaries(seconds, peak))
                              for seconds, peak in [(1.0, 301.0), (2.0, 303.0), (4.0, 302.0)]])

    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split() == ["produce", "50,000", "25,000–100,000", "301–303"]
    assert lines[4].split() == ["clear", "50,000", "50,000–50,000", "420–420"]
