"""Summary metrics of a run: latency percentiles, throughput, SLO attainment, goodput,
utilisation and cost, computed from the per-request table (so that a measured table from
real/ gets the same summary) plus, for the simulator, the utilisation timeline.

Definitions:
* span_s: from the first arrival (t = 0) to the last completion; throughput, goodput and
  cost use it as the run's length.
* ITL percentiles pool every gap between consecutive tokens of every request; TPOT is the
  per-request mean gap, so its percentiles are over requests.
* A request meets the SLO when it completed with TTFT <= slo.ttft_s and TPOT <= slo.tpot_s
  (a one-token request has no TPOT and meets that half); rejected and failed requests miss it.
  Goodput is the number of requests meeting the SLO per second of span.
* prefix_hit_rate: share of completed requests' prompt tokens served from a prefix cache.
* Cost per million output tokens = GPU-hours over the span x price / (output tokens / 1e6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.config import ClusterSpec
from sim.samples import Distribution


@dataclass(frozen=True, slots=True)
class SLO:
    ttft_s: float
    tpot_s: float
    attainment_target: float   # share of requests that must meet the SLO for a config to pass


def _pct(values: np.ndarray | pd.Series, q: float) -> float:
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    return float(np.percentile(values, q)) if len(values) else float("nan")


def slo_mask(requests: pd.DataFrame, slo: SLO) -> pd.Series:
    completed = requests["status"] == "completed"
    ttft_ok = requests["ttft_s"] <= slo.ttft_s
    tpot_ok = requests["tpot_s"].isna() | (requests["tpot_s"] <= slo.tpot_s)
    return completed & ttft_ok & tpot_ok


def describe_cluster(spec: ClusterSpec) -> str:
    parts = [f"{p.instances}{'' if p.role == 'mixed' else p.role[0].upper()} x TP{p.tp} {p.gpu.name}"
             for p in spec.pools]
    return " + ".join(parts)


def summarize(spec: ClusterSpec, requests: pd.DataFrame, itl: Distribution | np.ndarray, slo: SLO,
              utilisation: pd.DataFrame | None = None) -> dict[str, Any]:
    """`itl`: every gap between consecutive tokens, as a Distribution or raw samples."""
    itl = Distribution.of(itl)
    completed = requests[requests["status"] == "completed"]
    span_s = float(completed["completion_s"].max()) if len(completed) else float("nan")
    output_tokens = float(completed["output_tokens"].sum())
    meets = slo_mask(requests, slo)
    gpu_hours = spec.num_gpus * span_s / 3600.0
    attainment = _ratio(meets.sum(), len(requests))
    out: dict[str, Any] = {
        "architecture": spec.architecture,
        "cluster": describe_cluster(spec),
        "gpus": spec.num_gpus,
        "requests": len(requests),
        "completed": len(completed),
        "rejected": int((requests["status"] == "rejected").sum()),
        "failed": int((requests["status"] == "failed").sum()),
        "retries": int(requests["retries"].sum()),
        "kv_recomputes": int(requests["kv_recomputes"].sum()),
        "span_s": span_s,
        "ttft_p50_s": _pct(completed["ttft_s"], 50),
        "ttft_p90_s": _pct(completed["ttft_s"], 90),
        "ttft_p99_s": _pct(completed["ttft_s"], 99),
        "tpot_p50_s": _pct(completed["tpot_s"], 50),
        "tpot_p99_s": _pct(completed["tpot_s"], 99),
        "itl_p50_s": itl.quantile(0.50),
        "itl_p99_s": itl.quantile(0.99),
        "e2e_p50_s": _pct(completed["e2e_s"], 50),
        "e2e_p99_s": _pct(completed["e2e_s"], 99),
        "output_tokens_per_s": _ratio(output_tokens, span_s),
        "output_tokens_per_s_per_gpu": _ratio(output_tokens, span_s * spec.num_gpus),
        "ttft_attainment": _ratio((completed["ttft_s"] <= slo.ttft_s).sum(), len(requests)),
        "tpot_attainment": _ratio((completed["tpot_s"].isna() | (completed["tpot_s"] <= slo.tpot_s)).sum(),
                                  len(requests)),
        "slo_attainment": attainment,
        "meets_slo_target": bool(attainment >= slo.attainment_target),   # False when NaN (no requests)
        "goodput_rps": _ratio(meets.sum(), span_s),
        "preemptions": int(requests["num_preemptions"].sum()),
        "prefix_hit_rate": float(completed["cached_prompt_tokens"].sum() / max(1, completed["prompt_tokens"].sum())),
        "kv_transferred_gb": float(requests["kv_bytes_transferred"].sum() / 1e9),
        "cost_per_hour": spec.cost_per_hour,
        "cost_per_million_output_tokens": _ratio(spec.cost_per_hour * span_s / 3600.0, output_tokens / 1e6),
        "gpu_hours": gpu_hours,
    }
    if utilisation is not None:
        out |= utilisation_means(spec, utilisation, span_s)
    return out


def _ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN where the denominator is 0 or NaN (a run where nothing completed)."""
    return float(numerator) / float(denominator) if denominator else float("nan")


def utilisation_means(spec: ClusterSpec, utilisation: pd.DataFrame, span_s: float) -> dict[str, float]:
    """Mean compute and memory-bandwidth utilisation over the span, per pool and overall."""
    out: dict[str, float] = {}
    peak_flops = peak_bytes = flops = nbytes = 0.0
    for pool in spec.pools:
        rows = utilisation[utilisation["role"] == pool.role]
        pool_peak_flops = pool.gpu.peak_flops * pool.num_gpus * span_s
        pool_peak_bytes = pool.gpu.memory_bandwidth * pool.num_gpus * span_s
        if len(spec.pools) > 1:
            out[f"{pool.role}_compute_util"] = _ratio(rows["flops"].sum(), pool_peak_flops)
            out[f"{pool.role}_memory_util"] = _ratio(rows["bytes"].sum(), pool_peak_bytes)
        peak_flops += pool_peak_flops
        peak_bytes += pool_peak_bytes
        flops += rows["flops"].sum()
        nbytes += rows["bytes"].sum()
    out["compute_util"] = _ratio(flops, peak_flops)
    out["memory_util"] = _ratio(nbytes, peak_bytes)
    return out


def pool_utilisation_series(utilisation: pd.DataFrame) -> pd.DataFrame:
    """Per pool and time bin: compute and memory utilisation averaged over the pool's instances."""
    return (utilisation.groupby(["role", "bin_start_s"], sort=True)[["compute_util", "memory_util"]]
            .mean().reset_index())
