"""The fast path (decode windows) against the step-by-step reference: identical, bit for bit."""

import numpy as np
import pandas as pd
import pytest

from conftest import compose_config
from sim.experiment import plan
from sim.run import simulate
from sim.step_time import BatchShape, StepTimeModel
from sim.utilisation import UtilisationTimeline
from sim.workload import build_workload
from test_cluster import STRESS, poisson, spec_for


def assert_identical(fast, reference):
    pd.testing.assert_frame_equal(fast.requests, reference.requests, check_exact=True)
    assert np.array_equal(fast.itl.values, reference.itl.values)
    assert np.array_equal(fast.itl.counts, reference.itl.counts)
    pd.testing.assert_frame_equal(fast.utilisation, reference.utilisation, check_exact=True)
    pd.testing.assert_frame_equal(fast.instances.drop(columns="steps"), reference.instances.drop(columns="steps"))
    assert (fast.instances.steps == reference.instances.steps).all()
    assert fast.end_s == reference.end_s


@pytest.mark.parametrize("overrides", STRESS, ids=lambda o: " ".join(o))
def test_fast_path_matches_reference_on_stress_loads(overrides):
    spec = spec_for(*overrides)
    workload = poisson(rate=12, duration=30, prompt=(50, 6000), output=(1, 400), seed=3)
    assert_identical(simulate(spec, workload, 0.5, fast_forward=True), simulate(spec, workload, 0.5, fast_forward=False))


@pytest.mark.parametrize("overrides", [
    ("serving.monolithic.router=least_kv", "workload.window.duration_s=300", "workload.rate_scale=3"),
    ("workload=azure_code", "workload.window.duration_s=600", "serving.disaggregated.decode.router=least_kv"),
    ("workload.window.duration_s=200", "workload.rate_scale=6", "network=tcp", "serving.disaggregated.prefill.instances=1"),
])
def test_fast_path_matches_reference_on_traces(overrides):
    cfg = compose_config(*overrides)
    workload = build_workload(cfg["workload"], cfg["seed"])
    for spec in plan(cfg).values():
        fast = simulate(spec, workload, fast_forward=True)
        reference = simulate(spec, workload, fast_forward=False)
        assert_identical(fast, reference)


def test_fast_path_preempts_like_the_reference():
    spec = spec_for(*STRESS[3])
    workload = poisson(rate=14, duration=40, prompt=(50, 6000), output=(100, 900), seed=5)
    fast = simulate(spec, workload, fast_forward=True)
    assert fast.requests.num_preemptions.sum() > 0
    assert_identical(fast, simulate(spec, workload, fast_forward=False))


def test_decode_window_equals_step_costs(llama8b, h100):
    for tp in (1, 2, 4):
        model = StepTimeModel(llama8b, h100, tp)
        contexts = [17, 5000, 123, 999]
        times, flops, nbytes = model.decode_window(len(contexts), sum(contexts), 300)
        for j in (0, 1, 150, 299):
            cost = model.cost(BatchShape.of([(1, c + j) for c in contexts], len(contexts)))
            assert (times[j], flops[j], nbytes[j]) == (cost.time_s, cost.flops, cost.bytes)


def test_bulk_utilisation_equals_step_by_step():
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.001, 0.4, 500)
    ends = np.cumsum(np.concatenate(([3.3], durations)))[1:]
    starts = np.concatenate(([3.3], ends[:-1]))
    flops, nbytes = rng.uniform(1e12, 1e14, 500), rng.uniform(1e9, 1e11, 500)
    bulk, single = UtilisationTimeline(0.25), UtilisationTimeline(0.25)
    bulk.add_many(starts, ends, flops, nbytes)
    for args in zip(starts.tolist(), ends.tolist(), flops.tolist(), nbytes.tolist()):
        single.add(*args)
    for name, values in bulk.series(ends[-1]).items():
        assert np.array_equal(values, single.series(ends[-1])[name])


def test_window_block_allocations_follow_the_growing_contexts():
    from sim.decode_window import DecodeWindow, blocks_needed

    rng = np.random.default_rng(2)
    contexts = rng.integers(1, 5000, 40)
    held = -(-(contexts + 1) // 16) + rng.integers(0, 3, 40)   # some hold more (pulled prompt blocks)
    ends = np.arange(1, 301, dtype=float)
    window = DecodeWindow([], contexts, ends - 1, ends, ends, ends, held, 16)
    for started in range(0, 300):
        assert window.blocks_allocated_by(started + 0.5) == blocks_needed(contexts, held, 16, started + 1)
