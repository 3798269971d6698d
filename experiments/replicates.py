"""Replicates of a measurement and their confidence intervals.

A trace is one sample of traffic: replaying it again gives the same numbers, so its
replicates are disjoint windows of it. A synthetic workload's replicates are seeds.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from scipy import stats

from sim.workload import build_workload


def replicates(workload_cfg: Mapping[str, Any], seed: int, count: int) -> list[tuple[dict[str, Any], int]]:
    """`count` (workload config, seed) pairs: equal windows of the configured trace window, or
    seeds seed..seed+count-1 for a synthetic workload."""
    if workload_cfg.get("kind") != "trace":
        return [(dict(workload_cfg), seed + i) for i in range(count)]
    window = workload_cfg.get("window") or {}
    start = float(window.get("start_s") or 0.0)
    whole = build_workload(dict(workload_cfg) | {"rate_scale": 1.0, "max_requests": None}, seed)
    length = whole.duration_s / count * (1 + 1e-9)   # the last window keeps the last request
    return [(dict(workload_cfg) | {"window": {"start_s": start + i * length, "duration_s": length}}, seed)
            for i in range(count)]


def mean_ci(values: list[float] | np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (nan for one value)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean()), float(half)
