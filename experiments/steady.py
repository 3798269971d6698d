"""Was a run in steady state, or saturated? Flags from the per-request table alone.

A goodput or cost figure only means something if the cluster kept up with the load: a run
whose queue still grows when the arrivals stop measures the length of the trace, not the
cluster. Two flags, both computed over the arrival span [0, T] (T = last arrival):

* `unsteady`: the backlog (requests arrived and not yet ended) at T is more than twice its
  mean over the middle half of the run [T/4, 3T/4] plus a few requests: it was still growing.
* `saturated`: the median TTFT of the last quarter of arrivals exceeds the SLO's TTFT limit
  and twice the median of the second quarter (the first is skipped as warm-up): waiting time
  grew to the end, the signature of an arrival rate above the service rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from sim.metrics import SLO

BACKLOG_SLACK = 4          # requests: absolute tolerance so that near-empty queues never flag
GROWTH = 2.0               # the factor above which backlog or TTFT counts as grown


def backlog(requests: pd.DataFrame, at_s: np.ndarray) -> np.ndarray:
    """Requests arrived by each time of `at_s` and not yet ended (completed, rejected or failed)."""
    arrived = np.searchsorted(np.sort(requests["arrival_s"].to_numpy()), at_s, side="right")
    ends = requests["completion_s"].to_numpy(dtype=float)
    ends = np.sort(np.where(np.isnan(ends), requests["arrival_s"].to_numpy(), ends))
    return arrived - np.searchsorted(ends, at_s, side="right")


def steady_state(requests: pd.DataFrame, slo: SLO) -> dict[str, Any]:
    """`unsteady`, `saturated` (see the module docstring) and the numbers behind them."""
    end = float(requests["arrival_s"].max())
    middle = backlog(requests, np.linspace(end / 4, 3 * end / 4, 21))
    final = int(backlog(requests, np.array([end]))[0])
    quarter = np.minimum((requests["arrival_s"].to_numpy() / max(end, 1e-12) * 4).astype(int), 3)
    ttft = requests["ttft_s"].to_numpy(dtype=float)
    medians = [float(np.nanmedian(ttft[quarter == q])) if np.any(~np.isnan(ttft[quarter == q])) else np.nan
               for q in range(4)]
    ttft_trend = medians[3] / medians[1] if medians[1] > 0 else float("nan")
    return {"backlog_mid_mean": float(middle.mean()), "backlog_end": final,
            "ttft_p50_last_quarter_s": medians[3], "ttft_trend": ttft_trend,
            "unsteady": bool(final > GROWTH * middle.mean() + BACKLOG_SLACK),
            "saturated": bool(medians[3] > slo.ttft_s and ttft_trend > GROWTH)}
