"""One measurement: a cluster plan on a workload at a rate scale, summarised and flagged.

Every search here (goodput bisection, plan, Pareto, sweeps) is a series of these; they differ
only in which plans and rates they ask for.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sim.config import ClusterSpec
from sim.metrics import SLO, summarize
from sim.run import RunResult, simulate
from sim.workload import Workload, build_workload

from experiments.steady import steady_state


def scaled(workload_cfg: Mapping[str, Any], rate_scale: float) -> dict[str, Any]:
    """The workload config with its rate multiplied by `rate_scale` (on top of its own)."""
    return dict(workload_cfg) | {"rate_scale": float(workload_cfg.get("rate_scale", 1.0)) * rate_scale}


def offered_rps(workload: Workload) -> float:
    """Requests per second the workload offers over its arrival span."""
    return len(workload) / workload.duration_s if workload.duration_s > 0 else float("inf")


def busiest(workload: Workload, n: int) -> Workload:
    """The `n` consecutive requests that arrive within the shortest time, shifted to start at 0:
    the peak a short search must survive (a quiet stretch would pass configurations that fail
    the whole trace)."""
    if n >= len(workload):
        return workload
    arrivals = workload.arrival_s
    i = int(np.argmin(arrivals[n - 1:] - arrivals[:len(arrivals) - n + 1]))
    part = slice(i, i + n)
    fields = {"name": workload.name, "arrival_s": arrivals[part] - arrivals[i],
              "prompt_tokens": workload.prompt_tokens[part], "output_tokens": workload.output_tokens[part],
              "source": f"{workload.source}, busiest {n} requests (from {arrivals[i]:.0f} s)"}
    hashes = getattr(workload, "prefix_block_hashes", None)
    if hashes is not None:
        offsets = workload.prefix_block_offsets[i:i + n + 1]
        fields |= {"prefix_block_hashes": hashes[offsets[0]:offsets[-1]], "prefix_block_offsets": offsets - offsets[0],
                   "prefix_block_tokens": workload.prefix_block_tokens}
    return type(workload)(**fields)


def measure(spec: ClusterSpec, workload: Workload, slo: SLO, util_bin_s: float = 10.0) -> tuple[dict[str, Any], RunResult]:
    """Summary (sim.metrics.summarize), steady-state flags and the offered rate of one run."""
    result = simulate(spec, workload, util_bin_s)
    summary = summarize(spec, result.requests, result.itl, slo, result.utilisation)
    return (summary | steady_state(result.requests, slo)
            | {"offered_rps": offered_rps(workload), "sim_wall_s": result.wall_s}), result


def measure_at(spec: ClusterSpec, workload_cfg: Mapping[str, Any], seed: int, slo: SLO,
               rate_scale: float = 1.0) -> dict[str, Any]:
    """`measure` on the workload built from `workload_cfg` at `rate_scale` times its rate."""
    return measure(spec, build_workload(scaled(workload_cfg, rate_scale), seed), slo)[0]
