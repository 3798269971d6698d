"""The speed benchmark's measurement, on a small run in a fresh process (numbers are not asserted: timings
belong to the benchmark, not to tests)."""

from experiments.benchmark_speed import COLD_START, _in_fresh_process


def test_a_run_is_measured_in_a_fresh_process():
    row = _in_fresh_process(COLD_START, "disaggregated")
    assert row["requests"] > 100 and row["steps"] > row["requests"]
    assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["x_real_time"] > 1
    assert 0 < row["rss_before_mb"] <= row["peak_mb"] and row["rss_after_mb"] <= row["peak_mb"] + 1
