"""The stage benchmark's figures: a stage's rate is its transactions over its tasks' measured seconds, and
repeated loads print each stage's median rate with the ranges."""

from include.bench.pipeline_bench import print_medians, stage_figures


def summaries(produce_seconds: float, peak: float) -> dict[str, list[dict]]:
    return {"ledgerflow_produce": [{"published": 100_000, "seconds": produce_seconds, "peak_memory_mb": peak}],
            "ledgerflow_clear": [{"messages": 60_000, "seconds": 1.0, "peak_memory_mb": 400.0},
                                 {"messages": 40_000, "seconds": 1.0, "peak_memory_mb": 420.0}],
            "ledgerflow_settle": [{"messages": 100_000, "seconds": 4.0, "peak_memory_mb": 390.0}]}


def test_a_stage_adds_up_its_task_runs():
    assert stage_figures(summaries(2.0, 300.0)) == {"ledgerflow_produce": (1, 100_000, 2.0, 300.0),
                                                    "ledgerflow_clear": (2, 100_000, 2.0, 420.0),
                                                    "ledgerflow_settle": (1, 100_000, 4.0, 390.0)}


def test_repeated_loads_print_each_stages_median_rate_and_ranges(capsys):
    # produce at 100,000 / 50,000 / 25,000 tx/s: the median is the middle run's, not the mean (58,333)
    print_medians("medians", [stage_figures(summaries(seconds, peak))
                              for seconds, peak in [(1.0, 301.0), (2.0, 303.0), (4.0, 302.0)]])

    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split() == ["produce", "50,000", "25,000–100,000", "301–303"]
    assert lines[4].split() == ["clear", "50,000", "50,000–50,000", "420–420"]
