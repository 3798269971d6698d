"""The speed benchmark's measurement, on a small run in a fresh process (numbers are not asserted: timings
belong to the benchmark, not to tests)."""

from experiments.benchmark_speed import COLD_START, _checkout, _in_fresh_process


def test_a_run_is_measured_in_a_fresh_process():
    row = _in_fresh_process(COLD_START, "disaggregated")
    assert row["requests"] > 100 and row["steps"] > row["requests"]
    assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["x_real_time"] > 1
    assert 0 < row["rss_before_mb"] <= row["peak_mb"] and row["rss_after_mb"] <= row["peak_mb"] + 1


def test_an_earlier_commit_is_measured_on_its_own_checkout_with_the_reference_path():
    with _checkout("HEAD") as tree:
        assert (tree / "sim" / "run.py").exists()
        fast = _in_fresh_process(COLD_START, "monolithic", tree)
        reference = _in_fresh_process(COLD_START, "monolithic", tree, reference=True)
    assert not tree.exists()
    assert fast["requests"] == reference["requests"] and fast["steps"] == reference["steps"] > 0
