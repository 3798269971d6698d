"""What the router and proxy know about each vLLM server, shaped so that the simulator's own
routing policies (`sim.router.Router`) pick among real servers exactly as among simulated ones.

`sim.router.Router` reads `up`, `outstanding`, `kv_usage()`, `kv_usage_floor()`, `pending_tokens()` and
`prefix_cache` of an engine; `Backend` supplies them from what the gateway sees (requests it
sent and has not seen finish, prompt tokens of those not yet answered) and from the server's
own `/metrics` (`vllm:kv_cache_usage_perc`), which `poll_metrics` refreshes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sim.router import Router


@dataclass(eq=False)
class Backend:
    instance_id: int              # position in its pool, as in the per-request table
    url: str                      # http://host:port of the vLLM server
    up: bool = True               # False after a connection to it failed, until /health answers again
    outstanding: int = 0          # requests sent and not finished
    queued_prompt_tokens: int = 0 # prompt tokens of requests sent and not yet answered with a first token
    kv_usage_perc: float = 0.0    # vllm:kv_cache_usage_perc at the last poll (0..1)
    sent: int = 0                 # requests the gateway sent it (attempts, retries included)
    failed: int = 0               # of those, how many failed at this server
    prefix_cache: None = None     # the gateway does not see vLLM's prefix cache

    def kv_usage(self) -> float:
        return self.kv_usage_perc

    def kv_usage_floor(self) -> float:
        return self.kv_usage_perc

    def pending_tokens(self) -> int:
        return self.queued_prompt_tokens


@dataclass(frozen=True, slots=True)
class RoutedRequest:
    """The part of a request that `sim.router.Router.pick` reads."""

    prompt_tokens: int
    prefix_hashes: tuple[int, ...] = ()


@dataclass
class Pool:
    role: str                     # mixed | prefill | decode
    backends: list[Backend]
    router: Router

    @classmethod
    def of(cls, role: str, urls: list[str], policy: str) -> "Pool":
        backends = [Backend(i, url) for i, url in enumerate(urls)]
        return cls(role, backends, Router(policy, backends))

    def pick(self, prompt_tokens: int) -> Backend | None:
        """The backend the pool's policy chooses, or None when every backend is down."""
        return self.router.pick(RoutedRequest(prompt_tokens))


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """Sum of the samples of Prometheus metric `name` (a counter's `_total` sample included)
    whose labels contain `labels`; 0.0 when there is none."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


async def poll_metrics(session: aiohttp.ClientSession, pools: list[Pool], every_s: float) -> None:
    """Forever: mark each backend up or down by whether it answers, and refresh its KV usage
    where the pool routes by it and has a choice to make. Other pools (a pool of one backend
    among them) get only the cheap `/health`: a vLLM server renders `/metrics` on the core that
    runs its API server, and on a CPU deployment each render stalled the tokens it streams by
    tens of ms. A backend marked down (by a failed poll or a failed request) is up again once it
    answers 200."""
    while True:
        for pool in pools:
            needs_kv = pool.router.policy == "least_kv" and len(pool.backends) > 1
            for backend in pool.backends:
                path = "/metrics" if needs_kv else "/health"
                try:
                    async with session.get(backend.url + path, timeout=aiohttp.ClientTimeout(total=2)) as response:
                        text = await response.text()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    backend.up = False
                    continue
                backend.up = status == 200
                if needs_kv and backend.up:
                    try:
                        backend.kv_usage_perc = metric_value(text, "vllm:kv_cache_usage_perc")
                    except ValueError:   # answered, but not Prometheus text: KV usage unknown
                        pass
        await asyncio.sleep(every_s)
