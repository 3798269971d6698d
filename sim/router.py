"""Routing policies that pick an instance of a pool for each request.

`round_robin` cycles through the instances; `least_outstanding` picks the one with the fewest
requests submitted and not finished (vLLM production-stack's and Vidur's LOR);
`least_kv` picks the one with the smallest share of KV blocks in use (then the fewest
outstanding, since queued requests hold no blocks yet); `prefix_aware` picks the one with
the least work for this request: its prompt tokens not in that instance's prefix cache plus
the tokens already queued there (Dynamo's KV router weighs the same two). Ties go to the
lowest instance id, so routing is deterministic.

A pool of simulated engines also keeps a `LoadBoard`, so that a pick over hundreds of instances
takes an argmin over an array the engines keep up to date, not a Python loop over the pool;
the real gateway's few backends are read one by one.
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import Generic, Protocol, TypeVar
from typing import Sequence as Seq

import numpy as np

from sim.prefix_cache import PrefixCache

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


class RequestToRoute(Protocol):
    """What a policy reads of a request: a simulated `sim.request.Request` or the real proxy's
    `real.backends.RoutedRequest`."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def prefix_hashes(self) -> tuple[int, ...]: ...


class LoadBoard:
    """What the load-aware policies compare, one slot per instance of a pool, as arrays the
    instances write as their state changes (`post_outstanding`, `post_up`, and a
    `sim.kv_cache.BlockPool` mirroring its share in use into `kv_usage_floor`)."""

    def __init__(self, size: int):
        self.up = np.ones(size, dtype=bool)
        self.down = 0                         # slots not up
        self.loads = np.zeros(size)           # requests outstanding; +inf where down, so argmin skips it
        # least_kv: a lower bound of each share of KV blocks in use, the blocks held outside a
        # decode window as the pool mirrors them, raised by the router to the usage it reads
        self.kv_usage_floor = np.zeros(size)

    def post_outstanding(self, slot: int, outstanding: int) -> None:
        """The outstanding count of an instance that is up."""
        self.loads[slot] = outstanding

    def post_up(self, slot: int, up: bool, outstanding: int) -> None:
        """An instance went down or came back up (with `outstanding` requests)."""
        self.up[slot] = up
        self.down = int(np.count_nonzero(~self.up))
        self.loads[slot] = outstanding if up else math.inf

    def least_outstanding(self) -> int | None:
        """The slot up with the fewest outstanding, the first one on a tie; None when all are down."""
        slot = int(self.loads.argmin())
        return None if self.loads[slot] == math.inf else slot

    def kv_usage_floors(self) -> np.ndarray:
        """Each slot's `kv_usage_floor`, +inf where the instance is down (read it before the
        engines change: with every instance up, it is the board's own array)."""
        return self.kv_usage_floor if not self.down else np.where(self.up, self.kv_usage_floor, math.inf)


class Router(Generic[Instance]):
    def __init__(self, policy: str, engines: Seq[Instance], board: LoadBoard | None = None):
        """`board`, if given, is kept up to date by `engines` (slot i is engines[i])."""
        if policy not in POLICIES:
            raise ValueError(f"unknown router policy {policy!r}; choose one of {POLICIES}")
        self.policy = policy
        self.engines = list(engines)
        self.board = board
        self._next = 0

    def pick(self, request: RequestToRoute) -> Instance | None:
        """An instance that is up for `request`, or None when all are down."""
        board = self.board
        if self.policy == "least_kv":
            if board is None:
                return _least_kv(self.engines, np.array([e.kv_usage_floor() if e.up else math.inf
                                                         for e in self.engines]))
            return _least_kv(self.engines, board.kv_usage_floors())
        if self.policy == "least_outstanding" and board is not None:
            slot = board.least_outstanding()
            return None if slot is None else self.engines[slot]
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


def _least_kv(engines: list[Instance], floors: np.ndarray) -> Instance | None:
    """min(engines that are up, key=(kv_usage, outstanding)), first in list order on a tie, or
    None when none is up, given each engine's `kv_usage_floor` in `floors` (+inf where down).

    `kv_usage` (which counts a decode window's allocations so far: not free) is evaluated only
    where it can win: the floor bounds it from below, so the engines are visited in floor order
    and once a floor exceeds the best usage found, no engine further on can beat it. Nor can one
    once the floor equals the best usage, the best's usage is its own floor and it has nothing
    outstanding: the engines left at that floor would at best tie with it and come after it in
    list order (an idle pool's common case). Only the engines whose floor is at most the usage
    of the first visited can be reached, so only those are sorted: this runs once per request
    over a whole pool (hundreds of instances in a big plan).

    Each usage evaluated is written back into `floors` (the board's own array, where the pool
    has one and every instance is up): it stays a lower bound, since within a window usage
    only grows and any change to the blocks held outside one rewrites the floor, and it lets
    the next picks rule out that engine without evaluating it."""
    first = int(floors.argmin())
    if floors[first] == math.inf:
        return None
    best, best_floor = engines[first], float(floors[first])
    best_key = (best.kv_usage(), best.outstanding, first)
    if best_key[0] == best_floor and best_key[1] == 0:
        return best   # the loop below would stop at once (an idle pool's common case)
    reachable = (floors <= best_key[0]).nonzero()[0]
    # (floor, index) pairs sort as a stable sort by floor does; the first is `first`'s
    others = sorted(zip(floors[reachable].tolist(), reachable.tolist()))[1:] if len(reachable) > 1 else ()
    floors[first] = best_key[0]
    for floor, i in others:
        if floor > best_key[0] or (floor == best_key[0] == best_floor and best_key[1] == 0):
            break
        engine = engines[i]
        key = (engine.kv_usage(), engine.outstanding, i)
        floors[i] = key[0]
        if key < best_key:
            best, best_floor, best_key = engine, floor, key
    return best


def _uncached_tokens(engine: Routable, request: RequestToRoute) -> int:
    if engine.prefix_cache is None or not request.prefix_hashes:
        return request.prompt_tokens
    return request.prompt_tokens - engine.prefix_cache.cached_tokens(request.prefix_hashes, request.prompt_tokens)
