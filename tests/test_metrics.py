"""Summaries of runs where nothing, or not everything, completed: NaN where undefined, never a crash."""

import math

import numpy as np

from sim.metrics import SLO, summarize
from sim.run import simulate
from test_cluster import one_request, spec_for


def test_a_run_where_no_request_completed_summarizes_to_nan_latencies_and_zero_counts():
    spec = spec_for("serving=disaggregated")
    result = simulate(spec, one_request(500, 4))
    failed = result.requests.assign(status="failed", reason="instance 0 failed before its first token")
    summary = summarize(spec, failed, np.array([]), SLO(0.5, 0.1, 0.9), result.utilisation)
    assert summary["completed"] == 0 and summary["failed"] == 1
    for key in ("ttft_p50_s", "itl_p99_s", "output_tokens_per_s", "goodput_rps", "cost_per_million_output_tokens",
                "compute_util"):
        assert math.isnan(summary[key]), key
    assert summary["slo_attainment"] == 0.0 and summary["meets_slo_target"] is False


def test_an_empty_request_table_summarizes_without_error():
    spec = spec_for("serving=monolithic")
    empty = simulate(spec, one_request(100, 2)).requests.iloc[0:0]
    summary = summarize(spec, empty, np.array([]), SLO(0.5, 0.1, 0.9))
    assert summary["requests"] == 0 and math.isnan(summary["slo_attainment"])
