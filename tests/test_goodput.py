"""Goodput bisection: the bracket logic on a known threshold, and a configuration whose goodput
follows by hand from the step-time model."""

import pytest

from experiments.configs import compose_config
from experiments.goodput import Probe, bisect_rate, find_goodput
from sim.experiment import plan
from sim.step_time import StepTimeModel


def threshold_probe(limit: float, calls: list):
    def probe(scale: float) -> Probe:
        calls.append(scale)
        return Probe(scale, 10 * scale, 1.0 if scale <= limit else 0.0, scale <= limit, False)
    return probe


@pytest.mark.parametrize("limit, start", [(3.3, 1.0), (0.3, 1.0), (1.0, 1.0), (40.0, 8.0)])
def test_bracket_holds_the_threshold_within_tolerance(limit, start):
    calls = []
    b = bisect_rate(threshold_probe(limit, calls), start, rel_tol=0.01)
    assert b.converged
    assert b.passing.rate_scale <= limit < b.failing.rate_scale
    assert b.failing.rate_scale / b.passing.rate_scale <= 1.01
    assert [p.rate_scale for p in b.probes] == calls


def test_open_brackets_and_run_budget():
    always = bisect_rate(threshold_probe(1e9, []), highest=16)
    assert always.failing is None and always.passing.rate_scale == 16
    never = bisect_rate(threshold_probe(-1, []), lowest=0.25)
    assert never.passing is None and never.failing.rate_scale == 0.25
    assert len(bisect_rate(threshold_probe(3.3, []), rel_tol=1e-9, max_runs=5).probes) == 5


def test_goodput_of_a_lone_instance_matches_its_prefill_time():
    """N evenly spaced 2000-token prompts with one output token on one instance that runs one
    request at a time: a D/D/1 queue with service time s = the step-time model's prefill time.
    With TTFT limit 2s and 100% attainment, request k waits k(s - g) at gap g < s, so the last
    of N passes while g >= s(N-2)/(N-1): an offered rate N / ((N-1) g) of at most N / ((N-2) s)."""
    n = 100
    cfg = compose_config(["serving=monolithic", "serving.instances=1", "serving.engine.max_num_seqs=1",
                          "workload=gamma", "workload.cv=1e-4", f"workload.num_requests={n}", "~workload.lengths",
                          "+workload.lengths={prompt:{dist:fixed,value:2000},output:{dist:fixed,value:1}}",
                          "slo.attainment_target=1.0"])
    spec = plan(cfg)["monolithic"]
    service_s = StepTimeModel(spec.model, spec.pools[0].gpu, 1).prefill_time(2000)
    cfg["slo"]["ttft_s"] = 2 * service_s
    expected_rps = n / ((n - 2) * service_s)
    goodput = find_goodput(spec, cfg, rel_tol=0.01)
    b = goodput.bracket
    assert b.passing.rps <= expected_rps * 1.002 and b.failing.rps >= expected_rps * 0.998
    assert b.failing.rps / b.passing.rps <= 1.011
    assert goodput.rps_per_gpu == goodput.rps
