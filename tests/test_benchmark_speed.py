"""The speed benchmark's measurement, on a small run in a fresh process (numbers are not asserted: timings
belong to the benchmark, not to tests)."""

import shutil
import sys

import pytest

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


def test_compared_trees_take_turns_and_each_keeps_its_fastest_run(monkeypatch):
    import experiments.benchmark_speed as benchmark

    calls = []

    def recorded(overrides, architecture, tree=None, reference=False):
        row = _in_fresh_process(overrides, architecture, tree, reference)
        calls.append((tree, row))
        return row

    monkeypatch.setattr(benchmark, "_in_fresh_process", recorded)
    with _checkout("HEAD") as tree:
        old, new = benchmark._fastest(COLD_START, "monolithic", [tree, None], False, rounds=2)
    assert [t for t, _ in calls] == [tree, None, tree, None]
    assert old == min((row for t, row in calls if t == tree), key=lambda row: row["cpu_s"])
    assert new == min((row for t, row in calls if t is None), key=lambda row: row["cpu_s"])
    assert old["requests"] == new["requests"] > 100


def test_a_counted_run_simulates_the_same_as_a_timed_one():
    from experiments.benchmark_speed import measure

    counted = measure(COLD_START, "disaggregated", warm_up=False, counted=True)
    timed = measure(COLD_START, "disaggregated", warm_up=False)
    assert counted["requests"] == timed["requests"] > 100 and counted["steps"] == timed["steps"]


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_callgrind_counts_the_instructions_inside_call_tracing_alone():
    from experiments.benchmark_speed import counted_run

    def program(counted: int, uncounted: int) -> list[str]:
        return [sys.executable, "-c", f"import sys; sum(range({uncounted})); "
                                      f"sys.call_tracing(sum, (range({counted}),)); print('done')"]

    output, small = counted_run(program(100_000, 0))
    _, large = counted_run(program(200_000, 0))
    _, small_again = counted_run(program(100_000, 1_000_000))
    assert output.strip() == "done"
    assert abs(small_again - small) < 0.001 * small      # work outside sys.call_tracing is not counted
    assert 100_000 < large - small < 0.6 * large          # the count grows with the work inside it
