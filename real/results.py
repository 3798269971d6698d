"""From what the replayer saw to the simulator's per-request table, a per-token table and a
summary: a measured run and a simulated one join on `request_id` and summarise alike.

The table is built by `sim.table.requests_table` from `sim.request.Request` records, so its
columns and derived times (TTFT, E2E, TPOT, ITL max) are computed by the same code as the
simulator's. Times are seconds from the replay's start (the first request's intended send).
vLLM's per-request metrics (`--enable-per-request-metrics`: the server's TTFT and queue
time) place the prompt's compute, counted back from when its first token was received:
* prefill_start_s: first token received − (server TTFT − server queue time); disaggregated,
  the same on the prefill server's answer, as the proxy received it;
* prefill_end_s: the proxy's receipt of the prefill answer (disaggregated) or the first
  token's arrival (monolithic: the step that completes the prompt samples the first token);
* transfer_start_s: the proxy's second hop to the decode server, which starts the pull;
  transfer_end_s: that + the decode server's queue time (a request waits there, in
  WAITING_FOR_REMOTE_KVS, until its KV has arrived).
What vLLM counts per server and not per request is NaN (num_preemptions, kv_recomputes; the
summary carries the servers' preemption counter). kv_bytes_transferred is the prompt's KV
size (the connector moves every prompt block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from real.replay import Outcome
from sim.metrics import SLO, summarize
from sim.request import Request
from sim.table import requests_table

NAN = math.nan


def _header_time(outcome: Outcome, name: str, start: float) -> float:
    value = outcome.headers.get(name)
    return float(value) - start if value is not None else NAN


def _busy_s(metrics: dict[str, float]) -> float:
    """Server TTFT minus queue time: from the prompt's first step to its first token."""
    if "time_to_first_token_ms" not in metrics:
        return NAN
    return (metrics["time_to_first_token_ms"] - metrics.get("queue_time_ms", 0.0)) / 1e3


def to_request(outcome: Outcome, prompt_tokens: int, output_tokens: int, start: float,
               architecture: str, kv_bytes_per_token: float) -> Request:
    times = np.asarray(outcome.token_times) - start
    request = Request(outcome.request_id, outcome.sent_s - start, prompt_tokens, output_tokens,
                      status=outcome.status, reason=outcome.reason, num_preemptions=NAN, kv_recomputes=NAN,
                      cached_prompt_tokens=int(outcome.headers.get("x-pdsim-cached-prompt-tokens",
                                                                   outcome.cached_prompt_tokens)))
    if len(times):
        request.first_token_s = float(times[0])
        request.itl_max_s = float(np.diff(times).max()) if len(times) > 1 else 0.0
    if outcome.status == "completed":
        request.completion_s = float(times[-1])
    if architecture == "disaggregated":
        request.prefill_instance = int(outcome.headers.get("x-pdsim-prefill-instance", -1))
        request.decode_instance = int(outcome.headers.get("x-pdsim-decode-instance", -1))
        request.prefill_start_s = _header_time(outcome, "x-pdsim-prefill-started", start)
        request.prefill_end_s = _header_time(outcome, "x-pdsim-prefill-done", start)
        request.transfer_start_s = _header_time(outcome, "x-pdsim-decode-sent", start)
        request.transfer_end_s = request.transfer_start_s + outcome.server_metrics.get("queue_time_ms", NAN) / 1e3
        if request.decode_instance >= 0 and len(times):
            request.kv_bytes_transferred = prompt_tokens * kv_bytes_per_token
    else:
        request.prefill_instance = request.decode_instance = int(outcome.headers.get("x-pdsim-instance", -1))
        request.prefill_start_s = request.first_token_s - _busy_s(outcome.server_metrics)
        request.prefill_end_s = request.first_token_s
    return request


def requests_frame(outcomes: list[Outcome], prompt_tokens: np.ndarray, output_tokens: np.ndarray,
                   architecture: str, kv_bytes_per_token: float) -> pd.DataFrame:
    """The simulator's per-request table (sim.table.REQUEST_COLUMNS, same order)."""
    start = outcomes[0].intended_s
    return requests_table(to_request(o, int(p), int(n), start, architecture, kv_bytes_per_token)
                          for o, p, n in zip(outcomes, prompt_tokens, output_tokens))


def tokens_frame(outcomes: list[Outcome]) -> pd.DataFrame:
    """One row per received output token: request_id, token_index, time_s (from the replay's
    start). Tokens that arrived in one chunk share a time."""
    start = outcomes[0].intended_s
    ids = np.concatenate([np.full(len(o.token_times), o.request_id) for o in outcomes])
    index = np.concatenate([np.arange(len(o.token_times)) for o in outcomes])
    times = np.concatenate([np.asarray(o.token_times, dtype=float) for o in outcomes]) - start
    return pd.DataFrame({"request_id": ids.astype(np.int64), "token_index": index.astype(np.int64), "time_s": times})


def itl_gaps(tokens: pd.DataFrame) -> np.ndarray:
    """Every gap between consecutive tokens of the same request."""
    ordered = tokens.sort_values(["request_id", "token_index"])
    gaps = ordered.groupby("request_id")["time_s"].diff()
    return gaps.dropna().to_numpy()


def scheduling_delays(outcomes: list[Outcome]) -> np.ndarray:
    """Actual send time minus intended send time, per request (the replayer's own lag)."""
    return np.array([o.sent_s - o.intended_s for o in outcomes])


@dataclass(frozen=True, slots=True)
class Cores:
    """What `sim.metrics.summarize` reads of a GPU, for CPU cores (no price)."""

    name: str
    price_per_hour: float = 0.0


@dataclass(frozen=True, slots=True)
class CpuPool:
    """What `sim.metrics.summarize` reads of a pool; `tp` counts the cores of one server."""

    role: str
    instances: int
    tp: int
    gpu: Cores

    @property
    def num_gpus(self) -> int:
        return self.instances * self.tp


@dataclass(frozen=True, slots=True)
class CpuCluster:
    """A deployment described as `sim.metrics.summarize` expects a cluster: 'gpus' are cores."""

    architecture: str
    pools: tuple[CpuPool, ...]

    @property
    def num_gpus(self) -> int:
        return sum(p.num_gpus for p in self.pools)

    @property
    def cost_per_hour(self) -> float:
        return 0.0


def summary(cluster: CpuCluster, requests: pd.DataFrame, tokens: pd.DataFrame, outcomes: list[Outcome],
            slo: SLO, counters: dict[str, float]) -> dict[str, Any]:
    """The simulator's summary of the measured table, plus the replayer's scheduling delay and the
    servers' counters (`counters`: metric deltas over the replay, e.g. preemptions). With no
    request completed there are no latencies or rates to summarise (summarize divides by the
    output tokens): only the counts."""
    if (requests["status"] == "completed").any():
        out = summarize(cluster, requests, itl_gaps(tokens), slo)
    else:
        out = {"architecture": cluster.architecture, "gpus": cluster.num_gpus, "requests": len(requests),
               "completed": 0, **{status: int((requests["status"] == status).sum()) for status in ("rejected", "failed")}}
    delays = scheduling_delays(outcomes)
    out |= {"scheduling_delay_p50_s": float(np.percentile(delays, 50)),
            "scheduling_delay_p99_s": float(np.percentile(delays, 99)),
            "scheduling_delay_max_s": float(delays.max())}
    out |= counters
    return out
