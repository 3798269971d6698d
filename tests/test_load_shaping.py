"""Load shaping (sim/load_shaping.py), synthetic arrival processes and their fit (sim/arrivals.py),
and the prefix-block representation they carry (sim/workload_record.py)."""

from __future__ import annotations

import numpy as np
import pytest

from sim import load_shaping
from sim.arrivals import ArrivalProcess, rate_and_cv
from sim.describe import prefix_reuse_share
from sim.traces import load_trace
from sim.workload import Workload, WorkloadError, build_workload


def hashed(prompts, blocks, arrival=None) -> Workload:
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blocks])])
    arrival = np.arange(len(prompts), dtype=float) if arrival is None else arrival
    return Workload("h", arrival, prompts, np.full(len(prompts), 10), "test",
                    np.concatenate([np.asarray(b, np.int64) for b in blocks]), offsets, 4)


def per_minute_dispersion(w: Workload) -> float:
    counts = np.bincount((w.arrival_s // 60).astype(int))
    return float(counts.var() / counts.mean())


# --------------------------------------------------------------------------- the record

def test_prefix_blocks_travel_with_their_requests():
    w = hashed([8, 5, 12], [[1, 2], [1, 7], [1, 2, 9]])
    assert [w.blocks_of(i).tolist() for i in range(3)] == [[1, 2], [1, 7], [1, 2, 9]]
    picked = w.select(np.array([2, 0]), np.array([0.0, 1.0]), "picked")
    assert [picked.blocks_of(i).tolist() for i in range(2)] == [[1, 2, 9], [1, 2]]
    assert picked.source == "test, picked" and not picked.prefix_block_hashes.flags.writeable
    assert Workload("p", [0.0], [3], [1], "s").blocks_of(0).size == 0


def test_inconsistent_prefix_blocks_are_refused():
    with pytest.raises(WorkloadError, match="go together"):
        Workload("x", [0.0], [3], [1], "s", prefix_block_hashes=np.array([1]))
    with pytest.raises(WorkloadError, match="offsets"):
        Workload("x", [0.0, 1.0], [3, 3], [1, 1], "s", np.array([1, 2]), np.array([0, 2]), 512)


# --------------------------------------------------------------------------- shaping

def test_thin_is_seeded_and_keeps_the_share():
    w = load_trace("azure_conv_2023")
    a, b = (load_shaping.thin(w, 0.25, np.random.default_rng(5)) for _ in range(2))
    assert np.array_equal(a.arrival_s, b.arrival_s) and len(a) == pytest.approx(0.25 * len(w), rel=0.05)
    assert set(a.prompt_tokens) <= set(w.prompt_tokens) and "thinned to 0.25" in a.source
    with pytest.raises(WorkloadError, match="keeps none"):
        load_shaping.thin(Workload("one", [0.0], [1], [1], "s"), 1e-9, np.random.default_rng(0))


def test_superpose_multiplies_the_rate_and_keeps_burstiness():
    w = load_trace("azure_code_2023")
    big = load_shaping.superpose(w, 4, np.random.default_rng(0))
    assert len(big) == 4 * len(w) and big.duration_s <= w.duration_s * 1.001
    assert sorted(big.prompt_tokens) == sorted(np.tile(w.prompt_tokens, 4))
    # per-minute counts stay far more dispersed than Poisson's (variance / mean = 1)
    assert per_minute_dispersion(big) > 30 and per_minute_dispersion(w) > 30
    assert "4 superposed shifted copies" in big.source


def test_superposed_copies_do_not_share_prefixes():
    w = hashed([8, 8], [[1, 2], [1, 2]])
    big = load_shaping.superpose(w, 3, np.random.default_rng(0))
    blocks = {tuple(big.blocks_of(i)) for i in range(len(big))}
    assert blocks == {(1, 2), (4, 5), (7, 8)}                             # shift = copy x (max hash + 1)
    assert prefix_reuse_share(big) == prefix_reuse_share(w) == 0.5


def test_clip_to_context_truncates_or_drops_and_counts():
    w = hashed([8, 5, 12], [[1, 2], [1, 7], [1, 2, 9]])                  # outputs are 10 each
    cut = load_shaping.clip_to_context(w, 12, "truncate")
    # fitting prompts keep their length, outputs stop at the context; a prompt that does not fit
    # is cut to leave room for its output, keeping the blocks its first tokens cover
    assert list(cut.prompt_tokens) == [8, 5, 2] and list(cut.output_tokens) == [4, 7, 10]
    assert "(1 prompts and 2 outputs truncated)" in cut.source
    assert [cut.blocks_of(i).tolist() for i in range(3)] == [[1, 2], [1, 7], [1]]
    long_output = load_shaping.clip_to_context(w, 8, "truncate")
    assert list(long_output.prompt_tokens) == [1, 5, 1] and list(long_output.output_tokens) == [7, 3, 7]
    dropped = load_shaping.clip_to_context(w, 16, "drop")
    assert list(dropped.prompt_tokens) == [5] and "2 requests over the 16-token context dropped" in dropped.source


def test_shaping_from_config_is_seeded_and_ordered():
    cfg = {"name": "code", "kind": "trace", "bundled": "azure_code_2023", "window": {"start_s": 600,
           "duration_s": 1200}, "thin": 0.5, "copies": 3, "rate_scale": 2.0, "max_context": 4096}
    a, b, c = (build_workload(cfg, seed=s) for s in (1, 1, 2))
    assert np.array_equal(a.arrival_s, b.arrival_s) and not np.array_equal(a.arrival_s, c.arrival_s)
    assert a.duration_s <= 600.5 and (a.prompt_tokens + a.output_tokens).max() <= 4096
    assert a.source.index("window") < a.source.index("thinned") < a.source.index("copies") \
        < a.source.index("rate x2") < a.source.index("context")


@pytest.mark.parametrize("key, value, match", [
    ("thin", 1.5, "share of requests kept"), ("copies", 0, "copies = 0"),
    ("max_context", 1, "max_context = 1"), ("over_context", "wrap", "over_context = 'wrap'"),
    ("timestamps", "shuffle", "timestamps = 'shuffle'"), ("bucket_s", -3, "bucket_s = -3"),
])
def test_bad_shaping_keys_name_the_key(key, value, match):
    with pytest.raises(WorkloadError, match=match):
        build_workload({"name": "c", "kind": "trace", "bundled": "azure_code_2023", key: value}, seed=0)


def test_trace_config_without_a_file_says_what_to_set():
    with pytest.raises(WorkloadError, match="workload.path is null: set it to your burstgpt file"):
        build_workload({"name": "b", "kind": "trace", "format": "burstgpt", "path": None, "bundled": None}, seed=0)


# --------------------------------------------------------------------------- synthetic processes

@pytest.mark.parametrize("cv, burst_s", [(3.0, 5.0), (8.0, 30.0)])
def test_onoff_hits_rate_and_cv(cv, burst_s):
    process = ArrivalProcess("onoff", 2.0, cv, burst_s)
    rate, measured_cv = rate_and_cv(process.sample(np.random.default_rng(0), count=300_000))
    assert rate == pytest.approx(2.0, rel=0.04) and measured_cv == pytest.approx(cv, rel=0.06)
    rate_on, on_s, off_s = process.onoff_parameters()
    assert rate_on * on_s / (on_s + off_s) == pytest.approx(2.0) and on_s == burst_s


def test_onoff_needs_cv_above_one():
    with pytest.raises(WorkloadError, match="cv > 1"):
        build_workload({"name": "o", "kind": "onoff", "rate": 1.0, "cv": 0.8, "burst_s": 2.0,
                        "duration_s": 10, "lengths": {"dist": "empirical_joint", "trace": "azure_code_2023"}}, 0)


@pytest.mark.parametrize("kind", ["gamma", "onoff"])
def test_fit_reproduces_the_traces_rate_and_cv(kind):
    target_rate, target_cv = rate_and_cv(load_trace("azure_code_2023").arrival_s)
    cfg = {"name": "f", "kind": kind, "fit": "azure_code_2023", "num_requests": 200_000,
           "lengths": {"dist": "empirical_joint", "trace": "azure_code_2023"},
           **({"burst_s": 20.0} if kind == "onoff" else {})}
    w = build_workload(cfg, seed=0)
    rate, cv = rate_and_cv(w.arrival_s)
    assert rate == pytest.approx(target_rate, rel=0.1) and cv == pytest.approx(target_cv, rel=0.15)
    assert "fitted to Azure LLM inference trace 2023 (code)" in w.source
    with pytest.raises(WorkloadError, match="set rate to null"):
        build_workload({**cfg, "rate": 3.0}, seed=0)
