"""Property-based tests: random clusters and random small traces keep the simulator's invariants."""

import copy

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import compose_config
from sim.experiment import plan
from sim.faults import fault_plan
from sim.run import simulate
from sim.workload import Workload

BASE = {arch: compose_config(f"serving={arch}") for arch in ("monolithic", "disaggregated")}

engines = st.fixed_dictionaries({
    "max_num_seqs": st.integers(1, 64),
    "max_num_batched_tokens": st.sampled_from([64, 512, 2048, 8192]),
    "chunked_prefill": st.booleans(),
    "reserve_gib": st.sampled_from([2.0, 40.0, 55.0]),   # 55 GiB leaves ~1.7k-token KV pools on an H100
})
pools = st.fixed_dictionaries({
    "instances": st.integers(1, 3),
    "tp": st.sampled_from([1, 2]),
    "router": st.sampled_from(["round_robin", "least_outstanding", "least_kv", "prefix_aware"]),
    "engine": engines,
})


@st.composite
def clusters(draw):
    arch = draw(st.sampled_from(["monolithic", "disaggregated"]))
    cfg = copy.deepcopy(BASE[arch])
    cfg["network"]["bandwidth"] *= draw(st.sampled_from([0.01, 1.0]))   # a slow link piles transfers up
    targets = [cfg["serving"]] if arch == "monolithic" else [cfg["serving"]["prefill"], cfg["serving"]["decode"]]
    for target in targets:
        pool = draw(pools)
        target.update({k: v for k, v in pool.items() if k != "engine"})
        target["engine"].update(pool["engine"])
        # a pool must accept one request of max_model_len: keep it within the smallest KV pool drawn
        target["engine"]["max_model_len"] = 1024
        if not target["engine"]["chunked_prefill"]:
            target["engine"]["max_num_batched_tokens"] = max(1024, target["engine"]["max_num_batched_tokens"])
    return next(iter(plan(cfg).values()))


@st.composite
def workloads(draw):
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0.0, 2.0), min_size=n, max_size=n))
    arrivals = np.cumsum([0.0] + gaps[1:])
    prompts = draw(st.lists(st.integers(1, 1100), min_size=n, max_size=n))   # some exceed max_model_len
    outputs = draw(st.lists(st.integers(1, 200), min_size=n, max_size=n))
    return Workload("random", np.asarray(arrivals), np.asarray(prompts), np.asarray(outputs), "hypothesis")


fault_plans = st.fixed_dictionaries({
    "instance_mtbf_s": st.sampled_from([None, 5.0, 20.0]),
    "instance_mttr_s": st.sampled_from([0.5, 3.0]),
    "schedule": st.lists(st.fixed_dictionaries({"instance": st.integers(0, 1), "at_s": st.floats(0, 20),
                                                "down_s": st.floats(0.1, 5)}), max_size=2),
    "retry_on_failure": st.booleans(),
    "link_events": st.lists(st.fixed_dictionaries({"at_s": st.floats(0, 20), "duration_s": st.floats(0.1, 5),
                                                   "bandwidth_factor": st.sampled_from([0.0, 0.1])}), max_size=2),
    "kv_transfer_failure_rate": st.sampled_from([0.0, 0.3]),
    "kv_load_failure_policy": st.sampled_from(["recompute", "fail"]),
    "kv_lease_s": st.sampled_from([0.5, 30.0]),
    "prefill_fallback": st.sampled_from(["fail", "local"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), workloads(), fault_plans, st.integers(0, 3))
def test_every_request_ends_with_a_reason_under_random_faults(spec, workload, faults, seed):
    instances = sum(pool.instances for pool in spec.pools)
    faults["schedule"] = [o for o in faults["schedule"] if o["instance"] < instances]
    plan = fault_plan(faults)
    result = simulate(spec, workload, util_bin_s=0.5, faults=plan, seed=seed)
    table = result.requests
    assert set(table.status) <= {"completed", "rejected", "failed"}
    assert (table.reason[table.status != "completed"] != "").all()
    done = table[table.status == "completed"]
    assert (done.arrival_s <= done.prefill_start_s).all() and (done.prefill_end_s <= done.first_token_s).all()
    assert (done.first_token_s <= done.completion_s).all()
    assert (result.instances.kv_peak_blocks <= result.instances.kv_blocks).all()
    assert (table.retries <= plan.max_retries).all()
    reference = simulate(spec, workload, util_bin_s=0.5, faults=plan, seed=seed, fast_forward=False)
    pd.testing.assert_frame_equal(table, reference.requests, check_exact=True)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), workloads())
def test_invariants_hold_on_random_clusters_and_traces(spec, workload):
    result = simulate(spec, workload, util_bin_s=0.5)
    table = result.requests
    assert len(table) == len(workload)
    too_long = table.prompt_tokens + table.output_tokens > spec.max_model_len
    assert (table.status[too_long] == "rejected").all() and (table.reason[too_long] != "").all()
    assert (table.status[~too_long] == "completed").all()
    done = table[table.status == "completed"]
    for earlier, later in [("arrival_s", "prefill_start_s"), ("prefill_start_s", "prefill_end_s"),
                           ("prefill_end_s", "first_token_s"), ("first_token_s", "completion_s")]:
        assert (done[earlier] <= done[later]).all(), (earlier, later)
    assert result.itl.total == int((done.output_tokens - 1).sum())
    assert (result.itl.values > 0).all()
    assert (result.instances.kv_peak_blocks <= result.instances.kv_blocks).all()
    assert (result.instances.kv_blocks_in_use_at_end == 0).all()
    assert (result.utilisation.busy_s <= result.utilisation.bin_s + 1e-9).all()   # one engine, one step at a time

    reference = simulate(spec, workload, util_bin_s=0.5, fast_forward=False)
    pd.testing.assert_frame_equal(table, reference.requests, check_exact=True)
    pd.testing.assert_frame_equal(result.utilisation, reference.utilisation, check_exact=True)
