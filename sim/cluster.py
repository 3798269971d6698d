"""Clusters of engines: monolithic (one pool behind a router) and disaggregated (a prefill
pool and a decode pool behind a proxy, with the KV hand-off between them).

Disaggregated requests follow vLLM's proxy protocol: the proxy sends the prompt to a prefill
instance with max_tokens=1 (one hop); when the prefill returns (a hop back), the proxy sends
the request to a decode instance (a third hop). The decode instance reserves blocks for the
whole prompt, pulls the KV from the prefill instance, which holds its blocks until the pull
ends, and then computes the last prompt token to sample the first output token.
"""

from __future__ import annotations

import numpy as np
import simpy

from sim.catalog import ModelSpec
from sim.config import ClusterSpec, PoolSpec
from sim.engine import DECODE, MIXED, PREFILL, Engine, EngineHooks
from sim.kv_cache import BlockPool
from sim.prefix_cache import PrefixCache
from sim.kv_transfer import Endpoint, KVNetwork, kv_transfer_bytes
from sim.request import Request, Sequence
from sim.router import Router
from sim.samples import WeightedSamples
from sim.step_time import StepTimeModel
from sim.utilisation import UtilisationTimeline


class Cluster:
    """What both architectures share: engines per pool, token accounting, request admission."""

    def __init__(self, env: simpy.Environment, spec: ClusterSpec, util_bin_s: float, fast_forward: bool,
                 prefix_block_tokens: int | None):
        self.env = env
        self.spec = spec
        self.model: ModelSpec = spec.model
        self.hop_s = spec.link.proxy_hop_s
        self.fast_forward = fast_forward
        self.requests: list[Request] = []
        self.itl = WeightedSamples()
        self.engines: dict[str, list[Engine]] = {}
        self.routers: dict[str, Router] = {}
        self._util_bin_s = util_bin_s
        self._prefix_block_tokens = prefix_block_tokens
        self._next_instance = 0

    def _build_pool(self, pool: PoolSpec, hooks: EngineHooks) -> list[Engine]:
        step_model = StepTimeModel(self.model, pool.gpu, pool.tp)
        engines = []
        for _ in range(pool.instances):
            cache = None
            if pool.prefix_caching and self._prefix_block_tokens:
                cache = PrefixCache(pool.kv_tokens, self._prefix_block_tokens, pool.limits.block_size)
            engines.append(Engine(self.env, self._next_instance, pool.role, pool.tp, pool.limits,
                                  BlockPool(pool.kv_blocks, pool.limits.block_size), step_model, hooks,
                                  UtilisationTimeline(self._util_bin_s), self.fast_forward, cache))
            self._next_instance += 1
        self.engines[pool.role] = engines
        self.routers[pool.role] = Router(pool.router, engines)
        return engines

    def arrive(self, request: Request) -> None:
        """A request reaches the router; one too long for the model is refused, as vLLM does."""
        self.requests.append(request)
        if request.prompt_tokens + request.output_tokens > self.spec.max_model_len:
            request.status = "rejected"
            request.reason = (f"prompt+output={request.prompt_tokens + request.output_tokens} "
                              f"> max_model_len={self.spec.max_model_len}")
            return
        self._dispatch(request)

    def _dispatch(self, request: Request) -> None:
        raise NotImplementedError

    @staticmethod
    def _cache_prompt(engine: Engine, request: Request) -> None:
        """The prompt's KV is now on `engine`: later requests with the same prefix reuse it."""
        if engine.prefix_cache is not None and request.prefix_hashes:
            engine.prefix_cache.insert(request.prefix_hashes, request.prompt_tokens)

    def _after(self, delay_s: float, action) -> None:
        self.env.timeout(delay_s).callbacks.append(lambda _event: action())

    def _record_token(self, _engine: Engine, seq: Sequence, now: float) -> None:
        request = seq.request
        if request.tokens_emitted == 0:
            request.first_token_s = now
        else:
            itl = now - request.last_token_s
            self.itl.add(itl)
            if itl > request.itl_max_s:
                request.itl_max_s = itl
        request.last_token_s = now
        request.tokens_emitted += 1
        if request.tokens_emitted == request.output_tokens:
            request.completion_s = now
            request.status = "completed"


    def _record_repeated_tokens(self, _engine: Engine, seqs: list[Sequence], times: np.ndarray) -> None:
        """Each sequence emitted a token at every one of `times` after its token at times[0]."""
        gaps = np.diff(times)
        self.itl.add_many(gaps, len(seqs))
        longest = float(gaps.max())
        last = float(times[-1])
        extra = len(gaps)
        for seq in seqs:
            request = seq.request
            if longest > request.itl_max_s:
                request.itl_max_s = longest
            request.last_token_s = last
            request.tokens_emitted += extra
            if request.tokens_emitted == request.output_tokens:
                request.completion_s = last
                request.status = "completed"


class MonolithicCluster(Cluster):
    def __init__(self, env: simpy.Environment, spec: ClusterSpec, util_bin_s: float, fast_forward: bool,
                 prefix_block_tokens: int | None):
        super().__init__(env, spec, util_bin_s, fast_forward, prefix_block_tokens)
        self._build_pool(spec.pool(MIXED), EngineHooks(on_token=self._on_token, on_finished=_ignore,
                                                       on_repeated_tokens=self._record_repeated_tokens))

    def _dispatch(self, request: Request) -> None:
        engine = self.routers[MIXED].pick(request)
        seq = Sequence(request, request.prompt_tokens, request.output_tokens)
        self._after(self.hop_s, lambda: engine.submit(seq))

    def _on_token(self, engine: Engine, seq: Sequence, now: float) -> None:
        request = seq.request
        if request.tokens_emitted == 0:
            request.prefill_end_s = now
            request.decode_instance = engine.instance_id
            self._cache_prompt(engine, request)
        self._record_token(engine, seq, now)


class DisaggregatedCluster(Cluster):
    def __init__(self, env: simpy.Environment, spec: ClusterSpec, util_bin_s: float, fast_forward: bool,
                 prefix_block_tokens: int | None):
        super().__init__(env, spec, util_bin_s, fast_forward, prefix_block_tokens)
        self.network = KVNetwork(env, spec.link.latency_s)
        self._build_pool(spec.pool(PREFILL), EngineHooks(on_token=self._on_prefill_token,
                                                         on_finished=self._on_prefill_done))
        self._build_pool(spec.pool(DECODE), EngineHooks(on_token=self._record_token, on_finished=_ignore,
                                                        on_repeated_tokens=self._record_repeated_tokens,
                                                        start_pull=self._start_pull))
        self.endpoints = {engine.instance_id: Endpoint(f"instance{engine.instance_id}",
                                                       spec.link.endpoint_bandwidth(engine.tp, pool.gpu.gpus_per_node))
                          for pool in spec.pools for engine in self.engines[pool.role]}
        self._prefill_of: dict[int, tuple[Engine, Sequence]] = {}

    def _dispatch(self, request: Request) -> None:
        engine = self.routers[PREFILL].pick(request)
        seq = Sequence(request, request.prompt_tokens, max_new_tokens=1)
        self._after(self.hop_s, lambda: engine.submit(seq))

    def _on_prefill_token(self, engine: Engine, seq: Sequence, now: float) -> None:
        seq.request.prefill_end_s = now   # the sampled token is discarded by the proxy
        self._cache_prompt(engine, seq.request)

    def _on_prefill_done(self, engine: Engine, seq: Sequence, _now: float) -> None:
        request = seq.request
        self._prefill_of[request.id] = (engine, seq)
        self._after(2 * self.hop_s, lambda: self._send_to_decode(request))

    def _send_to_decode(self, request: Request) -> None:
        engine = self.routers[DECODE].pick(request)
        request.decode_instance = engine.instance_id
        engine.submit(Sequence(request, request.prompt_tokens, request.output_tokens, needs_remote_kv=True))

    def _start_pull(self, decode_engine: Engine, seq: Sequence) -> None:
        request = seq.request
        prefill_engine, prefill_seq = self._prefill_of.pop(request.id)
        request.transfer_start_s = self.env.now
        cached = 0
        if decode_engine.prefix_cache is not None and request.prefix_hashes:
            cached = decode_engine.prefix_cache.cached_tokens(request.prefix_hashes, request.prompt_tokens)
            decode_engine.prefix_cache.record_lookup(request.prompt_tokens, cached)
        nbytes = kv_transfer_bytes(self.model, request.prompt_tokens - cached)   # only what D lacks
        request.kv_bytes_transferred = nbytes

        def pulled() -> None:
            request.transfer_end_s = self.env.now
            prefill_engine.release_held(prefill_seq)
            self._cache_prompt(decode_engine, request)
            decode_engine.kv_received(seq)

        self.network.transfer(self.endpoints[prefill_engine.instance_id],
                              self.endpoints[decode_engine.instance_id], nbytes, pulled)


def _ignore(_engine: Engine, _seq: Sequence, _now: float) -> None:
    """Completion is recorded with the last token; nothing more to do when a sequence ends."""


def build_cluster(env: simpy.Environment, spec: ClusterSpec, util_bin_s: float, fast_forward: bool = True,
                  prefix_block_tokens: int | None = None) -> Cluster:
    """`prefix_block_tokens`: tokens per prefix-block hash of the workload (None: no hashes)."""
    kind = MonolithicCluster if spec.architecture == "monolithic" else DisaggregatedCluster
    return kind(env, spec, util_bin_s, fast_forward, prefix_block_tokens)
