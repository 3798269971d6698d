"""Automatic prefix caching driven by a trace's prefix-block hashes (Mooncake's hash_ids)."""

from dataclasses import dataclass

import numpy as np
import pytest

from sim.prefix_cache import PrefixCache
from sim.run import simulate
from sim.step_time import BatchShape, StepTimeModel
from test_cluster import spec_for
from test_fast_forward import assert_identical


@dataclass
class HashedWorkload:
    """The slice of sim.workload.Workload that the simulator reads, with prefix hashes."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    hashes: list[list[int]]
    prefix_block_tokens: int = 512

    @property
    def prefix_block_hashes(self):
        return np.concatenate([np.asarray(h, dtype=np.int64) for h in self.hashes])

    def blocks_of(self, i):
        return np.asarray(self.hashes[i], dtype=np.int64)

    def __len__(self):
        return len(self.arrival_s)


def two_same_prefix(gap_s=2.0, prompt=4096):
    blocks = list(range(prompt // 512))
    return HashedWorkload(np.array([0.0, gap_s]), np.array([prompt, prompt]), np.array([4, 4]), [blocks, blocks])


def test_cache_matches_leading_blocks_and_evicts_least_recent():
    cache = PrefixCache(capacity_tokens=3 * 512, block_tokens=512, kv_block_size=16)
    cache.insert([1, 2, 3], 3 * 512)
    assert cache.match([1, 2, 9]) == 2 and cache.match([9, 1]) == 0
    cache.insert([7], 600)                      # evicts block 1, the least recently used
    assert cache.match([1]) == 0 and cache.match([2, 3]) == 2
    assert cache.cached_tokens([2, 3], 1024) == 1008   # whole 16-token blocks short of the last token


def test_repeated_prefix_is_not_recomputed():
    spec = spec_for("serving=monolithic", "serving.instances=1")
    table = simulate(spec, two_same_prefix()).requests
    assert list(table.cached_prompt_tokens) == [0, 4080]
    steps = StepTimeModel(spec.model, spec.pools[0].gpu, 1)
    expected = spec.link.proxy_hop_s + steps.cost(BatchShape.of([(16, 4080)], 1)).time_s
    assert table.ttft_s[1] == pytest.approx(expected, rel=1e-12)
    assert table.ttft_s[1] < table.ttft_s[0] / 5


def test_prefix_caching_can_be_switched_off():
    spec = spec_for("serving=monolithic", "serving.instances=1", "serving.engine.enable_prefix_caching=false")
    assert list(simulate(spec, two_same_prefix()).requests.cached_prompt_tokens) == [0, 0]


def test_decode_side_pulls_only_the_kv_it_lacks():
    spec = spec_for("serving=disaggregated")
    table = simulate(spec, two_same_prefix()).requests
    per_token = spec.model.kv_bytes_per_token
    assert list(table.kv_bytes_transferred) == [4096 * per_token, 16 * per_token]


def test_prefix_aware_router_follows_the_cache():
    workload = two_same_prefix()   # on two instances
    aware = simulate(spec_for("serving=monolithic", "serving.router=prefix_aware"), workload).requests
    rr = simulate(spec_for("serving=monolithic", "serving.router=round_robin"), workload).requests
    assert aware.decode_instance[1] == aware.decode_instance[0] and aware.cached_prompt_tokens[1] == 4080
    assert rr.decode_instance[1] != rr.decode_instance[0] and rr.cached_prompt_tokens[1] == 0


@pytest.mark.parametrize("overrides", [("serving=monolithic", "serving.router=prefix_aware"),
                                       ("serving=disaggregated", "serving.prefill.router=prefix_aware",
                                        "serving.decode.router=prefix_aware")])
def test_fast_path_matches_reference_with_prefix_reuse(overrides):
    rng = np.random.default_rng(4)
    n = 300
    prompts = rng.integers(600, 6000, n)
    pool = [list(rng.integers(0, 10**9, 12)) for _ in range(5)]   # five shared system prompts
    hashes = [pool[rng.integers(0, 5)][: p // 512] + list(rng.integers(0, 10**9, 2)) for p in prompts]
    workload = HashedWorkload(np.sort(rng.uniform(0, 40, n)) - 0.0, prompts, rng.integers(1, 300, n), hashes)
    workload.arrival_s -= workload.arrival_s[0]
    spec = spec_for(*overrides)
    fast = simulate(spec, workload, fast_forward=True)
    assert fast.requests.cached_prompt_tokens.sum() > 0
    assert_identical(fast, simulate(spec, workload, fast_forward=False))
