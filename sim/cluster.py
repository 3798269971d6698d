"""Clusters of engines: monolithic (one pool behind a router) and disaggregated (a prefill
pool and a decode pool behind a proxy, with the KV hand-off between them).

Disaggregated requests follow vLLM's proxy protocol: the proxy sends the prompt to a prefill
instance with max_tokens=1 (one hop); when the prefill returns (a hop back), the proxy sends
the request to a decode instance (a third hop). The decode instance reserves blocks for the
whole prompt, pulls the KV from the prefill instance, which holds its blocks until the pull
ends, and then computes the last prompt token to sample the first output token. A request
sent to a server also waits for that server's front end (`GPUSpec.frontend_s`: tokenising,
hand-off to the engine, the first token back; 0 unless calibrated). Where the link's pulls
are served between the source's steps (`LinkSpec.served_between_steps`), a pull that finds
the prefill instance mid-step starts when that step ends.

Failures (`sim.faults`): a failed instance loses what it held; the proxy resends a request
that had no token yet (up to `max_retries`) and reports the others failed. A KV pull that
fails is recomputed on the decode instance or fails the request, per the plan's policy.
Every request ends completed, rejected or failed; `done` triggers when all have.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
import simpy

from sim.catalog import ModelSpec
from sim.config import ClusterSpec, PoolSpec
from sim.engine import DECODE, MIXED, PREFILL, Engine, EngineHooks
from sim.events import At
from sim.faults import FaultPlan
from sim.kv_cache import BlockPool
from sim.prefix_cache import PrefixCache
from sim.kv_transfer import Endpoint, KVNetwork, kv_transfer_bytes
from sim.request import Request, Sequence
from sim.router import LoadBoard, Router
from sim.samples import WeightedSamples
from sim.step_time import StepTimeModel
from sim.utilisation import UtilisationTimeline


@dataclass(frozen=True, slots=True)
class SimOptions:
    util_bin_s: float = 1.0
    fast_forward: bool = True
    prefix_block_tokens: int | None = None   # tokens per prefix-block hash of the workload, if it has hashes
    faults: FaultPlan = field(default_factory=FaultPlan)
    seed: int = 0


class Cluster:
    """What both architectures share: engines per pool, token accounting, request admission,
    and the proxy's handling of failed instances."""

    def __init__(self, env: simpy.Environment, spec: ClusterSpec, options: SimOptions, expected_requests: int):
        self.env = env
        self.spec = spec
        self.options = options
        self.faults = options.faults
        self.model: ModelSpec = spec.model
        self.hop_s = spec.link.proxy_hop_s
        self.max_model_len = spec.max_model_len   # a min over pools: read once per request
        self.requests: list[Request] = []
        self.itl = WeightedSamples()
        self.engines: dict[str, list[Engine]] = {}
        self.routers: dict[str, Router] = {}
        self.done = env.event()
        self._expected = expected_requests
        self._ended = 0
        self._next_instance = 0

    def _build_pool(self, pool: PoolSpec, hooks: EngineHooks) -> list[Engine]:
        step_model = StepTimeModel(self.model, pool.gpu, pool.tp)
        engines = []
        board = LoadBoard(pool.instances)
        # Only least_kv reads the usage floors, which change at almost every step.
        usage_mirror = board.kv_usage_floor if pool.router == "least_kv" else None
        for slot in range(pool.instances):
            cache = None
            if pool.prefix_caching and self.options.prefix_block_tokens:
                cache = PrefixCache(pool.kv_tokens, self.options.prefix_block_tokens, pool.limits.block_size)
            engines.append(Engine(self.env, self._next_instance, pool.role, pool.tp, pool.limits,
                                  BlockPool(pool.kv_blocks, pool.limits.block_size, usage_mirror=usage_mirror,
                                            mirror_slot=slot), step_model, hooks,
                                  UtilisationTimeline(self.options.util_bin_s), self.options.fast_forward, cache,
                                  board, slot))
            self._next_instance += 1
        self.engines[pool.role] = engines
        self.routers[pool.role] = Router(pool.router, engines, board)
        return engines

    def arrive(self, request: Request) -> None:
        """A request reaches the router; one too long for the model is refused, as vLLM does."""
        self.requests.append(request)
        if request.prompt_tokens + request.output_tokens > self.max_model_len:
            self._end(request, "rejected", f"prompt+output={request.prompt_tokens + request.output_tokens} "
                                           f"> max_model_len={self.max_model_len}")
            return
        self._dispatch(request)

    def _dispatch(self, request: Request) -> None:
        """Send a request (new or retried) to its first pool."""
        raise NotImplementedError

    @property
    def all_engines(self) -> list[Engine]:
        return [engine for engines in self.engines.values() for engine in engines]

    def fail_instance(self, instance_id: int) -> None:
        self.all_engines[instance_id].fail()

    def recover_instance(self, instance_id: int) -> None:
        self.all_engines[instance_id].recover()

    def _end(self, request: Request, status: str, reason: str = "") -> None:
        request.status = status
        request.reason = reason
        self._ended += 1
        if self._ended == self._expected:
            self.done.succeed()

    def _route(self, role: str, request: Request) -> Engine | None:
        """An instance of the pool that is up, or None (and the request failed) when none is."""
        engine = self.routers[role].pick(request)
        if engine is None:
            self._end(request, "failed", f"no {role} instance up")
        return engine

    def _send(self, engine: Engine, seq: Sequence, hops: int = 1) -> None:
        """`seq` reaches `engine` after `hops` proxy hops and the server's front end."""
        delay = hops * self.hop_s + engine.step_model.gpu.frontend_s
        if delay > 0:
            self._after(delay, self._deliver, engine, seq)
        else:
            self._deliver(engine, seq)

    def _deliver(self, engine: Engine, seq: Sequence) -> None:
        """After the proxy hop and the server's front end: an instance that went down meanwhile
        loses the request."""
        if engine.up:
            engine.submit(seq)
        else:
            self._lost(engine, [seq], self.env.now)

    def _lost(self, engine: Engine, seqs: list[Sequence], _now: float) -> None:
        """`engine` failed holding `seqs`: the proxy resends what had not started streaming."""
        for seq in seqs:
            request = seq.request
            if request.status != "pending":
                continue
            if self.faults.retry_on_failure and request.tokens_emitted == 0 \
                    and request.retries < self.faults.max_retries:
                request.retries += 1
                request.restart()
                self._dispatch(request)
            else:
                stage = "mid-stream" if request.tokens_emitted else "before its first token"
                self._end(request, "failed", f"instance {engine.instance_id} failed {stage}")

    @staticmethod
    def _cache_prompt(engine: Engine, request: Request) -> None:
        """The prompt's KV is now on `engine`: later requests with the same prefix reuse it."""
        if engine.prefix_cache is not None and request.prefix_hashes:
            engine.prefix_cache.insert(request.prefix_hashes, request.prompt_tokens)

    def _after(self, delay_s: float, action, *args) -> None:
        """`action(*args)` after `delay_s` (queued as `env.timeout(delay_s)` would be)."""
        At(self.env, self.env.now + delay_s, callback=lambda _event: action(*args))

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
            self._end(request, "completed")

    def _record_repeated_tokens(self, _engine: Engine, seqs: list[Sequence], times: np.ndarray) -> None:
        """Each sequence emitted a token at every one of `times` after its token at times[0]."""
        longest = self.itl.add_gaps(times, len(seqs))
        last = float(times[-1])
        extra = len(times) - 1
        for seq in seqs:
            request = seq.request
            if longest > request.itl_max_s:
                request.itl_max_s = longest
            request.last_token_s = last
            request.tokens_emitted += extra
            if request.tokens_emitted == request.output_tokens:
                request.completion_s = last
                self._end(request, "completed")


class MonolithicCluster(Cluster):
    def __init__(self, env: simpy.Environment, spec: ClusterSpec, options: SimOptions, expected_requests: int):
        super().__init__(env, spec, options, expected_requests)
        self._build_pool(spec.pool(MIXED), EngineHooks(on_token=self._on_token, on_finished=_ignore,
                                                       on_repeated_tokens=self._record_repeated_tokens,
                                                       on_lost=self._lost))

    def _dispatch(self, request: Request) -> None:
        engine = self._route(MIXED, request)
        if engine is not None:
            seq = Sequence(request, request.prompt_tokens, request.output_tokens)
            self._send(engine, seq)

    def _on_token(self, engine: Engine, seq: Sequence, now: float) -> None:
        request = seq.request
        if request.tokens_emitted == 0:
            request.prefill_end_s = now
            request.decode_instance = engine.instance_id
            self._cache_prompt(engine, request)
        self._record_token(engine, seq, now)


@dataclass(slots=True, eq=False)
class HeldPrompt:
    """A prompt's KV held on a prefill instance until the decode side pulls it (or the lease ends)."""

    engine: Engine
    seq: Sequence
    incarnation: int      # of the prefill engine when it computed the prompt
    pulling: bool = False
    expired: bool = False

    @property
    def alive(self) -> bool:
        return self.engine.incarnation == self.incarnation and not self.expired

    @property
    def may_expire(self) -> bool:
        """Its lease can still end it: not being pulled, nor lost or expired (neither state is left)."""
        return not self.pulling and self.alive

    def release(self) -> None:
        if self.engine.incarnation == self.incarnation and self.seq.blocks:
            self.engine.release_held(self.seq)


class DisaggregatedCluster(Cluster):
    def __init__(self, env: simpy.Environment, spec: ClusterSpec, options: SimOptions, expected_requests: int):
        super().__init__(env, spec, options, expected_requests)
        self.network = KVNetwork(env, spec.link.latency_s)
        self._build_pool(spec.pool(PREFILL), EngineHooks(on_token=self._on_prefill_token,
                                                         on_finished=self._on_prefill_done, on_lost=self._lost))
        self._build_pool(spec.pool(DECODE), EngineHooks(on_token=self._on_decode_token, on_finished=_ignore,
                                                        on_repeated_tokens=self._record_repeated_tokens,
                                                        start_pull=self._start_pull, on_lost=self._lost))
        self.endpoints = {engine.instance_id: Endpoint(f"instance{engine.instance_id}",
                                                       spec.link.endpoint_bandwidth(engine.tp, pool.gpu.gpus_per_node))
                          for pool in spec.pools for engine in self.engines[pool.role]}
        self._held: dict[int, HeldPrompt] = {}
        self._leases: deque[tuple[float, HeldPrompt]] = deque()   # (end, prompt), in the order they end
        self._lease_timer_set = False
        self._rng = np.random.default_rng(options.seed)

    def fail_instance(self, instance_id: int) -> None:
        super().fail_instance(instance_id)
        self.network.endpoint_down(self.endpoints[instance_id])

    def recover_instance(self, instance_id: int) -> None:
        super().recover_instance(instance_id)
        self.network.endpoint_up(self.endpoints[instance_id])

    def _dispatch(self, request: Request) -> None:
        if self.faults.prefill_fallback == "local" and not any(e.up for e in self.engines[PREFILL]):
            self._prefill_on_decode(request)
            return
        engine = self._route(PREFILL, request)
        if engine is not None:
            seq = Sequence(request, request.prompt_tokens, max_new_tokens=1)
            self._send(engine, seq)

    def _prefill_on_decode(self, request: Request) -> None:
        """No prefill instance is up: a decode instance computes the prompt and decodes, as one
        monolithic instance would."""
        engine = self._route(DECODE, request)
        if engine is not None:
            request.decode_instance = engine.instance_id
            seq = Sequence(request, request.prompt_tokens, request.output_tokens)
            self._send(engine, seq)

    def _on_prefill_token(self, engine: Engine, seq: Sequence, now: float) -> None:
        seq.request.prefill_end_s = now   # the sampled token is discarded by the proxy
        self._cache_prompt(engine, seq.request)

    def _on_decode_token(self, engine: Engine, seq: Sequence, now: float) -> None:
        request = seq.request
        if request.prefill_end_s != request.prefill_end_s:   # NaN: its prompt was computed here
            request.prefill_end_s = now
        self._record_token(engine, seq, now)

    def _on_prefill_done(self, engine: Engine, seq: Sequence, _now: float) -> None:
        request = seq.request
        held = HeldPrompt(engine, seq, engine.incarnation)
        self._held[request.id] = held
        self._start_lease(held)
        self._after(2 * self.hop_s, self._send_to_decode, request)

    def _start_lease(self, held: HeldPrompt) -> None:
        """Blocks never pulled within `kv_lease_s` are freed; a later pull of them fails.

        Every lease lasts as long, so leases end in the order they start: one timer, at the end
        of the first lease that may still expire, serves them all. An event per lease would
        put tens of thousands of mostly void events in SimPy's queue of a big run."""
        self._leases.append((self.env.now + self.faults.kv_lease_s, held))
        if not self._lease_timer_set:
            self._set_lease_timer()

    def _set_lease_timer(self) -> None:
        leases = self._leases
        while leases and not leases[0][1].may_expire:
            leases.popleft()
        self._lease_timer_set = bool(leases)
        if leases:
            At(self.env, leases[0][0], callback=self._leases_end)

    def _leases_end(self, _event: At) -> None:
        leases, now = self._leases, self.env.now
        while leases and leases[0][0] <= now:
            held = leases.popleft()[1]
            if held.may_expire:
                held.expired = True
                held.release()
        self._set_lease_timer()

    def _send_to_decode(self, request: Request) -> None:
        engine = self._route(DECODE, request)
        if engine is not None:
            request.decode_instance = engine.instance_id
            self._send(engine, Sequence(request, request.prompt_tokens, request.output_tokens, needs_remote_kv=True),
                       hops=0)

    def _start_pull(self, decode_engine: Engine, seq: Sequence) -> None:
        request = seq.request
        held = self._held.pop(request.id)
        held.pulling = True
        request.transfer_start_s = self.env.now
        cached = 0
        if decode_engine.prefix_cache is not None and request.prefix_hashes:
            cached = decode_engine.prefix_cache.cached_tokens(request.prefix_hashes, request.prompt_tokens)
            decode_engine.prefix_cache.record_lookup(request.prompt_tokens, cached)
        nbytes = kv_transfer_bytes(self.model, request.prompt_tokens - cached)   # only what D lacks
        request.kv_bytes_transferred += nbytes
        incarnation = decode_engine.incarnation
        rate = self.faults.kv_transfer_failure_rate
        breaks = rate > 0 and self._rng.random() < rate

        def pulled() -> None:
            if breaks:
                failed()
                return
            if decode_engine.incarnation != incarnation:
                return   # the decode instance failed meanwhile; the request was handled then
            request.transfer_end_s = self.env.now
            held.release()
            self._cache_prompt(decode_engine, request)
            decode_engine.kv_received(seq)

        def failed() -> None:
            held.release()
            if decode_engine.incarnation != incarnation:
                return
            request.transfer_end_s = self.env.now
            if self.faults.kv_load_failure_policy == "recompute":
                request.kv_recomputes += 1
                decode_engine.kv_recompute(seq)
            else:
                decode_engine.drop(seq)
                self._end(request, "failed", "KV pull failed")

        def start() -> None:
            if not held.alive:
                self._after(self.spec.link.latency_s, failed)
                return
            self.network.transfer(self.endpoints[held.engine.instance_id],
                                  self.endpoints[decode_engine.instance_id], nbytes, pulled, failed)

        if self.spec.link.served_between_steps:
            held.engine.at_step_boundary(start)
        else:
            start()


def _ignore(_engine: Engine, _seq: Sequence, _now: float) -> None:
    """Completion is recorded with the last token; nothing more to do when a sequence ends."""


def build_cluster(env: simpy.Environment, spec: ClusterSpec, options: SimOptions, expected_requests: int) -> Cluster:
    kind = MonolithicCluster if spec.architecture == "monolithic" else DisaggregatedCluster
    return kind(env, spec, options, expected_requests)
