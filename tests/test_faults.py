"""Failures in the simulated cluster: what is lost, retried, recomputed or failed, and how."""

import numpy as np
import pandas as pd
import pytest

from sim.config import ConfigError
from sim.faults import fault_plan
from sim.run import simulate
from test_cluster import poisson, spec_for
from test_fast_forward import assert_identical

LOAD = dict(rate=10, duration=40, prompt=(200, 3000), output=(20, 300))


def run(overrides, faults, workload=None, **kwargs):
    return simulate(spec_for(*overrides), workload or poisson(**LOAD), faults=fault_plan(faults), **kwargs)


def assert_accounted(table):
    assert set(table.status) <= {"completed", "failed", "rejected"}
    assert (table.reason[table.status == "failed"] != "").all()
    done = table[table.status == "completed"]
    assert (done.arrival_s <= done.prefill_start_s).all() and (done.first_token_s <= done.completion_s).all()


BUSY = dict(rate=40, duration=30, prompt=(3000, 8000), output=(50, 300))   # queues build up


def test_a_failed_instance_loses_its_requests_and_the_proxy_resends_unstarted_ones():
    faults = {"schedule": [{"instance": 0, "at_s": 10.0, "down_s": 5.0}]}
    table = run(["serving=monolithic"], faults, poisson(**BUSY)).requests
    assert_accounted(table)
    failed = table[table.status == "failed"]
    assert len(failed) > 0 and failed.reason.str.contains("instance 0 failed mid-stream").all()
    retried = table[table.retries > 0]
    assert len(retried) > 0 and (retried.status == "completed").all()
    # while instance 0 is down, everything goes to instance 1
    during = table[(table.arrival_s > 10.01) & (table.arrival_s < 15.0)]
    assert (during.decode_instance == 1).all()


def test_without_retries_unstarted_requests_fail_too():
    faults = {"schedule": [{"instance": 0, "at_s": 10.0, "down_s": 5.0}], "retry_on_failure": False}
    table = run(["serving=monolithic"], faults, poisson(**BUSY)).requests
    assert_accounted(table)
    assert table.retries.sum() == 0
    assert table.reason.str.contains("before its first token").any()


def test_a_pool_with_every_instance_down_fails_new_requests():
    faults = {"schedule": [{"instance": 0, "at_s": 5.0, "down_s": 5.0}]}
    table = run(["serving=disaggregated"], faults).requests   # instance 0 is the only prefill instance
    assert_accounted(table)
    window = table[(table.arrival_s > 5.01) & (table.arrival_s < 10.0)]
    assert len(window) > 0 and (window.status == "failed").all()
    assert (window.reason == "no prefill instance up").all()
    assert (table[table.arrival_s > 10.01].status == "completed").all()


def test_with_local_fallback_decode_instances_compute_prompts_while_no_prefill_instance_is_up():
    faults = {"schedule": [{"instance": 0, "at_s": 5.0, "down_s": 5.0}], "prefill_fallback": "local"}
    result = run(["serving=disaggregated"], faults)
    table = result.requests
    assert_accounted(table)
    window = table[(table.arrival_s > 5.01) & (table.arrival_s < 10.0)]
    assert len(window) > 0 and (window.status == "completed").all()
    assert (window.prefill_instance == window.decode_instance).all() and (window.prefill_instance == 1).all()
    assert (window.kv_bytes_transferred == 0).all() and window.transfer_start_s.isna().all()
    assert (window.prefill_start_s <= window.prefill_end_s).all() and (window.prefill_end_s == window.first_token_s).all()
    later = table[table.arrival_s > 10.1]
    assert (later.prefill_instance == 0).all() and (later.kv_bytes_transferred > 0).all()
    assert_identical(result, run(["serving=disaggregated"], faults, fast_forward=False))


@pytest.mark.parametrize("policy, status", [("recompute", "completed"), ("fail", "failed")])
def test_failed_kv_pulls_follow_the_load_failure_policy(policy, status):
    faults = {"kv_transfer_failure_rate": 1.0, "kv_load_failure_policy": policy}
    table = run(["serving=disaggregated"], faults).requests
    assert_accounted(table)
    assert (table.status == status).all()
    if policy == "recompute":
        assert (table.kv_recomputes == 1).all()
        clean = run(["serving=disaggregated"], None).requests
        assert table.ttft_s.median() > clean.ttft_s.median()   # the decode instance computed the prompts
    else:
        assert (table.reason == "KV pull failed").all()


def test_prefill_instance_failing_during_pulls_sends_them_to_recompute():
    faults = {"schedule": [{"instance": 0, "at_s": 12.0, "down_s": 3.0}]}
    spec = ["serving=disaggregated", "serving.prefill.instances=2", "network=tcp"]   # slow pulls: some in flight
    table = run(spec, faults, poisson(rate=20, duration=30, prompt=(4000, 8000), output=(20, 100))).requests
    assert_accounted(table)
    assert table.kv_recomputes.sum() > 0


def test_a_degraded_link_slows_transfers_and_a_dropped_one_stalls_them():
    spec = ["serving=disaggregated", "network=tcp"]
    clean = run(spec, None).requests
    slow = run(spec, {"link_events": [{"at_s": 10.0, "duration_s": 10.0, "bandwidth_factor": 0.05}]}).requests
    down = run(spec, {"link_events": [{"at_s": 10.0, "duration_s": 2.0, "bandwidth_factor": 0.0}]}).requests
    inside = (clean.transfer_start_s > 10.5) & (clean.transfer_end_s < 19.0)
    duration = lambda t: (t.transfer_end_s - t.transfer_start_s)[inside]   # noqa: E731
    assert (duration(slow) > 5 * duration(clean)).all()
    stalled = (down.transfer_start_s > 10.0) & (down.transfer_start_s < 11.9)
    assert stalled.any() and (down.transfer_end_s[stalled] >= 12.0).all()
    assert (down.status == "completed").all()


def test_unpulled_prompts_are_freed_when_the_lease_ends():
    # one decode slot and long answers: prompts wait on the prefill side longer than the lease
    spec = ["serving=disaggregated", "serving.decode.engine.max_num_seqs=1"]
    workload = poisson(rate=2, duration=20, prompt=(500, 1000), output=(300, 400))
    table = run(spec, {"kv_lease_s": 0.5}, workload).requests
    assert_accounted(table)
    assert (table.status == "completed").all() and table.kv_recomputes.sum() > 0
    # exactly the prompts whose pull started after their lease had ended were recomputed
    waited = table.transfer_start_s - table.prefill_end_s
    assert ((table.kv_recomputes > 0) == (waited > 0.5)).all()


def test_random_failures_are_deterministic_and_the_fast_path_matches_the_reference():
    faults = {"instance_mtbf_s": 8.0, "instance_mttr_s": 2.0, "kv_transfer_failure_rate": 0.05}
    for arch in ("serving=monolithic", "serving=disaggregated"):
        first = run([arch], faults, seed=3)
        assert_accounted(first.requests)
        assert (first.requests.status == "failed").any() or first.requests.retries.sum() > 0
        pd.testing.assert_frame_equal(first.requests, run([arch], faults, seed=3).requests, check_exact=True)
        assert not first.requests.equals(run([arch], faults, seed=4).requests)
        assert_identical(first, run([arch], faults, seed=3, fast_forward=False))


@pytest.mark.parametrize("faults, expected", [
    ({"instance_mtbf_s": -1}, "instance_mtbf_s"),
    ({"kv_load_failure_policy": "ignore"}, "kv_load_failure_policy"),
    ({"schedule": [{"instance": 0}]}, "schedule entries need"),
    ({"kv_transfer_failure_rate": 2}, "kv_transfer_failure_rate"),
    ({"prefill_fallback": "elsewhere"}, "prefill_fallback"),
])
def test_bad_fault_configs_are_refused(faults, expected):
    with pytest.raises(ConfigError, match=expected):
        fault_plan(faults)


def test_a_scripted_failure_of_a_missing_instance_is_refused():
    with pytest.raises(ConfigError, match="instances 0..1"):
        run(["serving=monolithic"], {"schedule": [{"instance": 7, "at_s": 1.0, "down_s": 1.0}]})
