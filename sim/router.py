"""Routing policies that pick an instance of a pool for each request.

`round_robin` cycles through the instances; `least_outstanding` picks the one with the fewest
requests submitted and not finished (vLLM production-stack's and Vidur's LOR);
`least_kv` picks the one with the smallest share of KV blocks in use (then the fewest
outstanding, since queued requests hold no blocks yet). Ties go to the lowest instance id,
so routing is deterministic.
"""

from __future__ import annotations

from typing import Sequence as Seq

from sim.engine import Engine

POLICIES = ("round_robin", "least_outstanding", "least_kv")


class Router:
    def __init__(self, policy: str, engines: Seq[Engine]):
        if policy not in POLICIES:
            raise ValueError(f"unknown router policy {policy!r}; choose one of {POLICIES}")
        self.policy = policy
        self.engines = list(engines)
        self._next = 0

    def pick(self) -> Engine:
        if self.policy == "round_robin":
            engine = self.engines[self._next]
            self._next = (self._next + 1) % len(self.engines)
            return engine
        if self.policy == "least_outstanding":
            return min(self.engines, key=lambda e: e.outstanding)
        return min(self.engines, key=lambda e: (e.kv_usage(), e.outstanding))
