"""KV hand-off from prefill to decode instances over a shared network.

Each instance has one network endpoint whose bandwidth is that of its NICs (or NVLink ports)
together; the KV of a request moves as one flow from the prefill instance's endpoint to the
decode instance's. Concurrent flows share bandwidth: an endpoint splits its bandwidth equally
among the flows through it, and a flow moves at the smaller of its two shares. Rates are
recomputed whenever a flow starts or ends, so a transfer's duration depends on what else is
on the wire, as on a real NIC. A fixed latency per transfer (handshake and completion
notification) comes before the bytes.

The network's bandwidth can be scaled (a degraded link; 0 = down, flows stall), and the
flows of an endpoint whose instance failed are dropped, their `on_fail` called.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import simpy

from sim.catalog import ModelSpec
from sim.events import At


def kv_transfer_bytes(model: ModelSpec, tokens: int) -> float:
    """Bytes of KV a decode instance pulls for `tokens` prompt tokens (all layers, K and V)."""
    return tokens * model.kv_bytes_per_token


@dataclass(slots=True, eq=False)
class Endpoint:
    name: str
    bandwidth: float      # achievable B/s
    active_flows: int = 0


@dataclass(slots=True, eq=False)
class Flow:
    src: Endpoint
    dst: Endpoint
    remaining: float
    on_done: Callable[[], None]
    on_fail: Callable[[], None] | None = None
    rate: float = field(default=0.0)


class KVNetwork:
    """Flows with fair-shared bandwidth; `transfer` calls `on_done` when the bytes have arrived."""

    def __init__(self, env: simpy.Environment, latency_s: float):
        self.env = env
        self.latency_s = latency_s
        self.flows: list[Flow] = []
        self.peak_concurrent = 0
        self.bandwidth_factor = 1.0
        self._down: set[int] = set()           # ids of endpoints whose instance is down
        self._updated_at = 0.0
        self._generation = 0

    def transfer(self, src: Endpoint, dst: Endpoint, nbytes: float, on_done: Callable[[], None],
                 on_fail: Callable[[], None] | None = None) -> None:
        flow = Flow(src, dst, float(nbytes), on_done, on_fail)
        At(self.env, self.env.now + self.latency_s, callback=lambda _event: self._start(flow))

    def set_bandwidth_factor(self, factor: float) -> None:
        """From now on every endpoint runs at `factor` of its bandwidth."""
        self._advance()
        self.bandwidth_factor = factor
        self._reschedule()

    def endpoint_down(self, endpoint: Endpoint) -> None:
        """Its instance failed: its flows fail, and new ones through it fail at once."""
        self._down.add(id(endpoint))
        self._advance()
        dropped = [f for f in self.flows if f.src is endpoint or f.dst is endpoint]
        self._remove(dropped)
        self._reschedule()
        for flow in dropped:
            if flow.on_fail is not None:
                flow.on_fail()

    def endpoint_up(self, endpoint: Endpoint) -> None:
        self._down.discard(id(endpoint))

    def _start(self, flow: Flow) -> None:
        if id(flow.src) in self._down or id(flow.dst) in self._down:
            if flow.on_fail is not None:
                flow.on_fail()
            return
        if flow.remaining <= 0:
            flow.on_done()
            return
        self._advance()
        self.flows.append(flow)
        flow.src.active_flows += 1
        flow.dst.active_flows += 1
        self.peak_concurrent = max(self.peak_concurrent, len(self.flows))
        self._reschedule()

    def _advance(self) -> None:
        elapsed = self.env.now - self._updated_at
        if elapsed > 0:
            for flow in self.flows:
                flow.remaining -= flow.rate * elapsed
        self._updated_at = self.env.now

    def _reschedule(self) -> None:
        self._generation += 1
        if not self.flows:
            return
        factor = self.bandwidth_factor
        next_s, first = math.inf, []   # the flows that end first, and in how long
        for flow in self.flows:
            flow.rate = rate = factor * min(flow.src.bandwidth / flow.src.active_flows,
                                            flow.dst.bandwidth / flow.dst.active_flows)
            if factor:
                left_s = flow.remaining / rate
                if left_s < next_s:
                    next_s, first = left_s, [flow]
                elif left_s == next_s:
                    first.append(flow)
        if factor == 0:
            return   # the link is down: nothing moves until set_bandwidth_factor restores it
        generation = self._generation
        At(self.env, self.env.now + max(0.0, next_s), callback=lambda _event: self._finish(generation, first))

    def _remove(self, flows: list[Flow]) -> None:
        self.flows = [f for f in self.flows if f not in flows]
        for flow in flows:
            flow.src.active_flows -= 1
            flow.dst.active_flows -= 1

    def _finish(self, generation: int, finishing: list[Flow]) -> None:
        if generation != self._generation:
            return  # the flow set changed since this completion was planned
        self._advance()
        for flow in finishing:
            flow.remaining = 0.0
        done = [f for f in self.flows if f.remaining <= 0.0]
        self._remove(done)
        self._reschedule()
        for flow in done:
            flow.on_done()
