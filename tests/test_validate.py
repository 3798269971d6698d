"""experiments.validate: the error table, the targets and the mono/disagg ratios computed from
known frames; and the simulator's view of the real deployment (block size, KV cache size)."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments.validate import (ARCHITECTURES, LATENCIES, PERCENTILES, Observed, compose, error_rows, load_overrides,
                                  ratio_rows, sim_config, target_summary)


def frame(ttft: np.ndarray, tpot: np.ndarray, outputs: int = 10, failed: int = 0) -> pd.DataFrame:
    n = len(ttft)
    e2e = ttft + tpot * (outputs - 1)
    arrival = np.arange(n, dtype=float)
    done = pd.DataFrame({"status": "completed", "arrival_s": arrival, "ttft_s": ttft, "tpot_s": tpot,
                         "e2e_s": e2e, "completion_s": arrival + e2e, "output_tokens": outputs})
    lost = pd.DataFrame({"status": ["failed"] * failed, "arrival_s": np.full(failed, float(n)),
                         "ttft_s": math.nan, "tpot_s": math.nan, "e2e_s": math.nan,
                         "completion_s": math.nan, "output_tokens": outputs})
    return pd.concat([done, lost], ignore_index=True)


def observed(scale: float, failed: int = 0) -> Observed:
    rng = np.random.default_rng(0)
    ttft, tpot = rng.uniform(0.1, 1.0, 200) * scale, rng.uniform(0.01, 0.02, 200) * scale
    return Observed.of(frame(ttft, tpot, failed=failed), np.repeat(tpot, 9))


def test_error_rows_cover_every_metric_and_percentile_with_relative_errors():
    real, sim = observed(1.0, failed=3), observed(1.2)
    rows = pd.DataFrame(error_rows(sim, real, "monolithic", "light"))
    assert len(rows) == len(LATENCIES) * len(PERCENTILES) + 1
    latency = rows[rows["metric"] != "throughput"]
    assert np.allclose(latency["rel_error"], 0.2)            # every latency scaled by 1.2
    assert real.completed == 200 and real.requests == 203     # failed requests are left out of latencies
    p90 = rows[(rows["metric"] == "ttft") & (rows["percentile"] == "p90")].iloc[0]
    assert p90["real"] == pytest.approx(np.percentile(real.ttft, 90))
    throughput = rows[rows["metric"] == "throughput"].iloc[0]
    assert throughput["rel_error"] == pytest.approx(sim.throughput / real.throughput - 1)
    assert throughput["rel_error"] < 0                       # slower requests: a later last completion


def test_targets_are_judged_on_the_median_of_p50_and_p90_errors():
    real = observed(1.0)
    rows = error_rows(observed(1.05), real, "monolithic", "light") + error_rows(observed(1.3), real,
                                                                               "disaggregated", "light")
    targets = target_summary(pd.DataFrame(rows)).set_index("architecture")
    assert targets.loc["monolithic", "median_abs_p50_p90"] == pytest.approx(0.05)
    assert targets.loc["monolithic", "meets_latency"] and not targets.loc["disaggregated", "meets_latency"]


def test_ratios_compare_the_direction_of_the_architectures_difference():
    real_mono, real_disagg = observed(2.0), observed(1.0)
    rows = (error_rows(observed(1.5), real_mono, "monolithic", "heavy")
            + error_rows(observed(1.0), real_disagg, "disaggregated", "heavy"))
    ratios = ratio_rows(pd.DataFrame(rows)).set_index("metric")
    assert ratios.loc["itl p99", "real_mono_over_disagg"] == pytest.approx(2.0)
    assert ratios.loc["itl p99", "sim_mono_over_disagg"] == pytest.approx(1.5)
    assert ratios["same_direction"].all()
    flipped = (error_rows(observed(0.8), real_mono, "monolithic", "heavy")
               + error_rows(observed(1.0), real_disagg, "disaggregated", "heavy"))
    assert not ratio_rows(pd.DataFrame(flipped))["same_direction"].any()


def test_the_simulated_deployment_has_the_real_block_size_and_kv_cache():
    from sim.experiment import plan
    from sim.kv_cache import GIB

    cfg = sim_config(compose(load_overrides(0.05, 60, 1024)), "cpu-core-measured")
    assert cfg["hardware"]["name"] == "cpu-core" and cfg["network"]["name"] == "cpu-nixl"
    assert cfg["workload"]["max_context"] == 1024 and cfg["workload"]["window"]["duration_s"] == pytest.approx(3)
    specs = plan(cfg)
    assert set(specs) == set(ARCHITECTURES)
    for spec in specs.values():
        for pool in spec.pools:
            assert pool.limits.block_size == 32
            assert pool.kv_blocks * 32 * spec.model.kv_bytes_per_token == pytest.approx(
                cfg["real"]["kv_cache_gib"] * GIB, rel=1e-3)


def test_both_sides_run_without_prefix_caching():
    """The replayer's prompts repeat across loads (seeded by request index): a prefix cache would
    serve later loads from cache, which the simulator (no prefix hashes in the trace) does not."""
    cfg = compose(load_overrides(0.2, 60, 1024))
    serving = cfg["serving"]
    engines = [serving["monolithic"]["engine"], serving["disaggregated"]["prefill"]["engine"],
               serving["disaggregated"]["decode"]["engine"]]
    assert not any(engine["enable_prefix_caching"] for engine in engines)
