"""Goodput: the highest request rate at which a configuration still meets the SLO attainment
target, found by bisection over the workload's rate scale (as Vidur-Search bisects QPS).

    python -m experiments.goodput                                  # both architectures, default config
    python -m experiments.goodput serving=monolithic workload.window.duration_s=600 goodput.rel_tol=0.02

Overrides are those of `python -m sim`, plus `goodput.*` (configs/goodput.yaml). The search
assumes attainment does not rise with load. From the configured rate it doubles (or halves)
until one rate passes and one fails, then bisects geometrically until failing / passing
<= 1 + rel_tol, and reports that bracket, its rates in req/s (total and per GPU) and every run.
With `goodput.replicates=k` it also bisects on k windows of the trace (k seeds of a synthetic
workload) and reports their mean with a 95% confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import hydra
from omegaconf import DictConfig

from sim.config import ClusterSpec, ConfigError
from sim.experiment import as_dict, plan, slo_from_config
from sim.metrics import SLO
from sim.workload import WorkloadError

from experiments.evaluate import measure_at
from experiments.replicates import mean_ci, replicates


@dataclass(frozen=True, slots=True)
class Probe:
    rate_scale: float     # relative to the configured workload
    rps: float            # offered requests per second at that scale
    attainment: float     # share of requests meeting the SLO
    passed: bool
    saturated: bool


@dataclass(frozen=True, slots=True)
class Bracket:
    """The goodput lies in [passing, failing]; None on a side the search never reached."""

    passing: Probe | None
    failing: Probe | None
    probes: tuple[Probe, ...]     # in the order run

    @property
    def converged(self) -> bool:
        return self.passing is not None and self.failing is not None


def bisect_rate(probe: Callable[[float], Probe], start: float = 1.0, rel_tol: float = 0.05,
                max_runs: int = 20, lowest: float = 1 / 256, highest: float = 256.0) -> Bracket:
    """Bracket the highest passing rate scale of `probe` (pass must be monotone: once failing,
    failing at every higher scale). Stops after `max_runs` probes or at `lowest`/`highest`."""
    probes: list[Probe] = []

    def run(scale: float) -> Probe:
        probes.append(probe(scale))
        return probes[-1]

    first = run(start)
    passing, failing = (first, None) if first.passed else (None, first)
    while len(probes) < max_runs and (passing is None or failing is None):
        if failing is None:       # everything passed so far: double
            if passing.rate_scale * 2 > highest:
                break
            p = run(passing.rate_scale * 2)
        else:                     # everything failed so far: halve
            if failing.rate_scale / 2 < lowest:
                break
            p = run(failing.rate_scale / 2)
        passing, failing = (p, failing) if p.passed else (passing, p)
    while (len(probes) < max_runs and passing is not None and failing is not None
           and failing.rate_scale / passing.rate_scale > 1 + rel_tol):
        p = run(math.sqrt(passing.rate_scale * failing.rate_scale))
        passing, failing = (p, failing) if p.passed else (passing, p)
    return Bracket(passing, failing, tuple(probes))


def probe_for(spec: ClusterSpec, workload_cfg: Mapping[str, Any], seed: int, slo: SLO) -> Callable[[float], Probe]:
    def probe(scale: float) -> Probe:
        m = measure_at(spec, workload_cfg, seed, slo, scale)
        return Probe(scale, m["offered_rps"], m["slo_attainment"], m["meets_slo_target"], m["saturated"])
    return probe


@dataclass(frozen=True, slots=True)
class Goodput:
    spec: ClusterSpec
    bracket: Bracket

    @property
    def rps(self) -> float:
        """The highest rate known to pass (0 when none did)."""
        return self.bracket.passing.rps if self.bracket.passing else 0.0

    @property
    def rps_per_gpu(self) -> float:
        return self.rps / self.spec.num_gpus


def find_goodput(spec: ClusterSpec, cfg: Mapping[str, Any], rel_tol: float = 0.05, max_runs: int = 20) -> Goodput:
    """Goodput of `spec` on the workload, seed and SLO of the composed config `cfg`."""
    probe = probe_for(spec, cfg["workload"], int(cfg["seed"]), slo_from_config(cfg["slo"]))
    return Goodput(spec, bisect_rate(probe, 1.0, rel_tol, max_runs))


def replicated_goodput(spec: ClusterSpec, cfg: Mapping[str, Any]) -> str:
    """Goodput on each of `goodput.replicates` trace windows (or seeds), with a 95% CI."""
    g = cfg["goodput"]
    rates = [find_goodput(spec, cfg | {"workload": workload, "seed": seed}, g["rel_tol"], g["max_runs"]).rps
             for workload, seed in replicates(cfg["workload"], int(cfg["seed"]), int(g["replicates"]))]
    mean, half = mean_ci(rates)
    return (f"over {len(rates)} replicates: {mean:.3f} ± {half:.3f} req/s (95% CI; "
            f"{', '.join(f'{r:.2f}' for r in rates)})")


def format_goodput(name: str, g: Goodput) -> str:
    b = g.bracket
    lines = [f"{name}: {g.spec.num_gpus} GPUs, ${g.spec.cost_per_hour:.2f}/h"]
    lo = f"{b.passing.rps:.3f} req/s (x{b.passing.rate_scale:.4g})" if b.passing else "none (even the lowest rate failed)"
    hi = f"{b.failing.rps:.3f} req/s (x{b.failing.rate_scale:.4g})" if b.failing else "none (even the highest rate passed)"
    lines.append(f"  goodput {g.rps:.3f} req/s = {g.rps_per_gpu:.3f} req/s per GPU; bracket [{lo}, {hi}]"
                 f"{'' if b.converged else '  (NOT converged: raise goodput.max_runs)'}")
    lines.append(f"  {len(b.probes)} runs:")
    lines += [f"    x{p.rate_scale:<9.4g} {p.rps:9.3f} req/s  attainment {p.attainment:7.2%}  "
              f"{'pass' if p.passed else 'fail'}{'  saturated' if p.saturated else ''}" for p in b.probes]
    return "\n".join(lines)


@hydra.main(version_base=None, config_path="../configs", config_name="goodput")
def main(cfg: DictConfig) -> None:
    cfg = as_dict(cfg)
    try:
        specs = plan(cfg)
        slo = slo_from_config(cfg["slo"])
        print(f"SLO: TTFT <= {slo.ttft_s * 1e3:g} ms, TPOT <= {slo.tpot_s * 1e3:g} ms for "
              f"{slo.attainment_target:.0%} of requests")
        for name, spec in specs.items():
            print(format_goodput(name, find_goodput(spec, cfg, cfg["goodput"]["rel_tol"],
                                                    cfg["goodput"]["max_runs"])), flush=True)
            if int(cfg["goodput"]["replicates"]) > 1:
                print("  " + replicated_goodput(spec, cfg), flush=True)
    except (ConfigError, WorkloadError) as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
