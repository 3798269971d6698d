"""The event-cost benchmark's patterns run all their events (their costs belong to the benchmark)."""

import shutil
import sys

import pytest

from experiments.benchmark_events import PATTERNS, run_pattern
from experiments.benchmark_speed import counted_run


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p != "interrupt"])
def test_a_chain_of_waits_takes_one_step_per_event(pattern):
    assert run_pattern(pattern, 200) == pytest.approx(200 * 1e-3)


def test_every_long_wait_is_cut_by_an_interrupt():
    # cuts at 0.5 + 0.51 k; each long wait begins 1e-3 after a cut and would end 1 s later, so
    # the run ends when the last one's event fires, unheard. A wait that was not cut would
    # leave the interrupter a terminated process to interrupt (an error).
    assert run_pattern("interrupt", 200) == pytest.approx(0.5 + 198 * 0.51 + 1e-3 + 1.0, rel=1e-9)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_the_count_grows_with_the_events():
    def count(events: int) -> int:
        return counted_run([sys.executable, "-m", "experiments.benchmark_events", "--child", "process",
                            "--events", str(events)])[1]

    per_event = (count(2_000) - count(1_000)) / 1_000
    assert 1_000 < per_event < 100_000
