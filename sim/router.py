"""Routing policies that pick an instance of a pool for each request.

`round_robin` cycles through the instances; `least_outstanding` picks the one with the fewest
requests submitted and not finished (vLLM production-stack's and Vidur's LOR);
`least_kv` picks the one with the smallest share of KV blocks in use (then the fewest
outstanding, since queued requests hold no blocks yet); `prefix_aware` picks the one with
the least work for this request: its prompt tokens not in that instance's prefix cache plus
the tokens already queued there (Dynamo's KV router weighs the same two). Ties go to the
lowest instance id, so routing is deterministic.
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import Generic, Protocol, TypeVar
from typing import Sequence as Seq

from sim.prefix_cache import PrefixCache
from sim.request import Request

POLICIES = ("round_robin", "least_outstanding", "least_kv", "prefix_aware")
_outstanding = attrgetter("outstanding")


class Routable(Protocol):
    """What a policy reads of an instance: a simulated `sim.engine.Engine` or a real server's
    `real.backends.Backend`."""

    up: bool                          # takes requests
    outstanding: int                  # requests submitted and not finished
    prefix_cache: PrefixCache | None  # None where the router cannot see one

    def kv_usage(self) -> float: ...          # share of KV blocks in use now
    def kv_usage_floor(self) -> float: ...    # a cheap lower bound of kv_usage()
    def pending_tokens(self) -> int: ...      # tokens queued or running, still to compute


Instance = TypeVar("Instance", bound=Routable)


class Router(Generic[Instance]):
    def __init__(self, policy: str, engines: Seq[Instance]):
        if policy not in POLICIES:
            raise ValueError(f"unknown router policy {policy!r}; choose one of {POLICIES}")
        self.policy = policy
        self.engines = list(engines)
        self._next = 0

    def pick(self, request: Request) -> Instance | None:
        """An instance that is up for `request`, or None when all are down."""
        if self.policy == "least_kv":
            return _least_kv(self.engines)
        up = [e for e in self.engines if e.up]
        if not up:
            return None
        if self.policy == "round_robin":
            for _ in range(len(self.engines)):
                engine = self.engines[self._next]
                self._next = (self._next + 1) % len(self.engines)
                if engine.up:
                    return engine
        if self.policy == "least_outstanding":
            return min(up, key=_outstanding)   # C-level key: this runs once per request over a pool
        return min(up, key=lambda e: (_uncached_tokens(e, request) + e.pending_tokens(), e.outstanding))


def _least_kv(engines: list[Instance]) -> Instance | None:
    """min(engines that are up, key=(kv_usage, outstanding)), first in list order on a tie, or
    None when none is up. `kv_usage` (which counts a decode window's allocations so far: not
    free) is evaluated only where it can win: `kv_usage_floor` bounds it from below, so once
    that bound exceeds the best usage found, no engine further in bound order can beat it. Nor
    can one once the bound equals the best usage, the best's usage is its own bound and it has
    nothing outstanding: the engines left at that bound would at best tie with it and come
    after it in list order (an idle pool's common case). This runs once per request over a
    whole pool (hundreds of instances in a big plan): the bounds are sorted as plain floats."""
    floors = [e.kv_usage_floor() if e.up else math.inf for e in engines]
    best, best_key = None, None
    for i in sorted(range(len(engines)), key=floors.__getitem__):
        bound = floors[i]
        if bound == math.inf or (best_key is not None and (bound > best_key[0] or (
                bound == best_key[0] == floors[best_key[2]] and best_key[1] == 0))):
            break
        engine = engines[i]
        key = (engine.kv_usage(), engine.outstanding, i)
        if best_key is None or key < best_key:
            best, best_key = engine, key
    return best


def _uncached_tokens(engine: Routable, request: Request) -> int:
    if engine.prefix_cache is None or not request.prefix_hashes:
        return request.prompt_tokens
    return request.prompt_tokens - engine.prefix_cache.cached_tokens(request.prefix_hashes, request.prompt_tokens)
