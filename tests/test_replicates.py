"""Replicates: disjoint trace windows that cover the trace, seeds for synthetic loads, t-based CIs."""

import pytest

from experiments.configs import compose_config
from experiments.replicates import mean_ci, replicates
from sim.workload import build_workload


def test_trace_windows_partition_the_trace():
    cfg = compose_config(["workload=azure_code"])
    parts = replicates(cfg["workload"], 0, 3)
    assert sum(len(build_workload(w, s)) for w, s in parts) == len(build_workload(cfg["workload"], 0))
    starts = [w["window"]["start_s"] for w, _ in parts]
    assert starts == sorted(starts) and starts[0] == 0.0


def test_synthetic_replicates_are_seeds():
    cfg = compose_config(["workload=poisson"])
    assert [s for _, s in replicates(cfg["workload"], 7, 3)] == [7, 8, 9]


def test_mean_ci_half_width():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / 3 ** 0.5, rel=1e-3)
