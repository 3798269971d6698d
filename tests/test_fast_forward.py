"""The fast path (decode windows) against the step-by-step reference: identical, bit for bit."""

import math

import numpy as np
import pandas as pd
import pytest

from conftest import compose_config
from sim.experiment import plan
from sim.run import simulate
from sim.window_steps import window_steps
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
    ("workload.window.duration_s=200", "workload.rate_scale=6", "network=cpu-nixl",
     "serving.disaggregated.prefill.instances=1"),   # pulls served between the prefill steps
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
        ends, flops, nbytes = window_steps(model, len(contexts), sum(contexts), 300, 12.5)   # the rows
        end = 12.5
        for j in range(300):   # SimPy's clock: each step ends at the previous end plus its time
            cost = model.cost(BatchShape.of([(1, c + j) for c in contexts], len(contexts)))
            end += cost.time_s
            assert (ends[j], flops[j], nbytes[j]) == (end, cost.flops, cost.bytes)


def _spread_one_by_one(bin_s, steps, bins):
    """The plain definition: each step's share of its duration added to each bin it touches, in order."""
    busy, flops, nbytes = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for start, end, step_flops, step_bytes in steps:
        first = math.floor(start / bin_s)
        last = max(first, math.ceil(end / bin_s) - 1)
        if first == last or end <= start:
            busy[first] += end - start
            flops[first] += step_flops
            nbytes[first] += step_bytes
            continue
        for b in range(first, last + 1):
            overlap = min(end, (b + 1) * bin_s) - max(start, b * bin_s)
            busy[b] += overlap
            flops[b] += step_flops * (overlap / (end - start))
            nbytes[b] += step_bytes * (overlap / (end - start))
    return {"busy_s": busy, "flops": flops, "bytes": nbytes}


def test_utilisation_of_windows_equals_adding_steps_one_by_one():
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.001, 0.4, 500)
    durations[::50] = 0.0                       # zero-length steps, some on bin edges
    ends = np.cumsum(np.concatenate(([3.25], durations)))[1:]
    starts = np.concatenate(([3.25], ends[:-1]))
    flops, nbytes = rng.uniform(1e12, 1e14, 500), rng.uniform(1e9, 1e11, 500)
    timeline = UtilisationTimeline(0.25)
    timeline.add_many(3.25, np.stack([ends[:120], flops[:120], nbytes[:120]]), 100)   # a window cut at 100 steps,
    for args in zip(starts[100:130].tolist(), ends[100:130].tolist(), flops[100:130].tolist(),
                    nbytes[100:130].tolist()):
        timeline.add(*args)                                                 # single steps,
    timeline.add_many(float(ends[129]), np.stack([ends[130:], flops[130:], nbytes[130:]]), 370)   # another window
    got = timeline.series(ends[-1])
    expected = _spread_one_by_one(0.25, zip(starts.tolist(), ends.tolist(), flops.tolist(), nbytes.tolist()),
                                  len(got["busy_s"]))
    for name, values in expected.items():
        assert np.array_equal(got[name], values), name
    assert got["busy_s"].sum() == pytest.approx(durations.sum())


def test_window_block_allocations_follow_the_growing_contexts():
    from sim.decode_window import DecodeWindow, blocks_needed

    rng = np.random.default_rng(2)
    contexts = rng.integers(1, 5000, 40)
    held = -(-(contexts + 1) // 16) + rng.integers(0, 3, 40)   # some hold more (pulled prompt blocks)
    ends = np.arange(1, 301, dtype=float)
    contexts, held = contexts.tolist(), held.tolist()   # a window's lists
    window = DecodeWindow([], contexts, 0.0, np.stack([ends, ends, ends]), held, 16)
    for started in range(0, 300):
        assert window.blocks_allocated_by(started + 0.5) == blocks_needed(contexts, held, 16, started + 1)
