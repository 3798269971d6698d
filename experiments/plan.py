"""Plan: the cheapest configuration (or the one with fewest GPUs) that serves a workload at a
target rate within the SLO, monolithic or disaggregated, homogeneous or heterogeneous.

    python -m experiments.plan                                     # the default workload at its own rate
    python -m experiments.plan plan.target_rps=40 'plan.gpus=[h100-sxm,a100-80gb]' plan.jobs=2

Overrides are those of `python -m sim` plus `plan.*` (configs/plan.yaml). The search:

1. enumerates families (search_space) and drops those whose config the simulator refuses;
2. gives each pool the fewest instances whose step-time capacity bound (capacity) reaches the
   target rate: configurations below it are pruned unsimulated;
3. simulates the rest in order of cost (or GPUs) on the busiest `plan.max_requests` consecutive
   requests of the workload at the target rate, in parallel. It skips a configuration that
   grows a passing one of its family or has the same pools as a passing one (neither can cost
   less), and one that shrinks a failing one (it can only fail). It stops an architecture once
   it has `plan.top_k` passes cheaper than what is left;
4. reruns each architecture's passes, best first, on the whole workload split into
   `plan.confirm_windows` windows (attainment with a 95% confidence interval over windows,
   steady-state flags) until one holds there; the winner is the best of those.

Writes plan_results.csv (one row per simulated configuration) into Hydra's run directory.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import hydra
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from sim.catalog import gpu_from_config, model_from_config
from sim.config import ConfigError, pool_spec
from sim.experiment import as_dict, plan as cluster_plans, slo_from_config
from sim.metrics import SLO
from sim.workload import Workload, WorkloadError, build_workload

from experiments.capacity import Lengths, instance_capacity_rps
from experiments.configs import group_entry
from experiments.evaluate import busiest, measure, offered_rps, scaled
from experiments.replicates import mean_ci, replicates
from experiments.search_space import Candidate, Family, PoolChoice, Space, candidates, experiment_config, families


@dataclass(frozen=True, slots=True)
class Evaluated:
    candidate: Candidate
    cost_per_hour: float
    gpus: int
    summary: dict[str, Any]

    @property
    def passed(self) -> bool:
        return bool(self.summary["meets_slo_target"])


@dataclass
class Search:
    evaluated: list[Evaluated]
    considered: int           # candidates within the GPU budget, all families
    infeasible_families: int  # refused by the simulator's config checks (e.g. weights do not fit)
    pruned: int               # below the capacity bound, never simulated
    skipped: int              # decided by dominance or by top_k, never simulated

    def passes(self, architecture: str) -> list[Evaluated]:
        return [e for e in self.evaluated if e.passed and e.candidate.family.architecture == architecture]


@functools.cache
def price(gpu: str) -> float:
    return float(group_entry("hardware", gpu)["price_per_hour"])


def cost_and_gpus(c: Candidate) -> tuple[float, int]:
    pools = list(zip(c.family.pools, c.instances))
    return sum(n * p.tp * price(p.gpu) for p, n in pools), sum(n * p.tp for p, n in pools)


def sort_key(objective: str) -> Callable[[Candidate], tuple]:
    def key(c: Candidate) -> tuple:
        cost, gpus = cost_and_gpus(c)
        return (cost, gpus, c.label) if objective == "cost" else (gpus, cost, c.label)
    return key


class InstanceBounds:
    """Per-instance capacity bounds (experiments.capacity) of the pools of families, memoised
    by what determines them (role, GPU, TP, engine limits): thousands of families share a few
    hundred pools."""

    def __init__(self, base: Mapping[str, Any], lengths: Lengths, slo: SLO):
        self.base, self.lengths, self.slo = base, lengths, slo
        self.model = model_from_config(base["model"])
        self._rps: dict[tuple, float | None] = {}   # None: the simulator refuses this pool

    def _instance_rps(self, role: str, choice: PoolChoice, chunk: int, seqs: int) -> float | None:
        key = (role, choice, chunk, seqs)
        if key not in self._rps:
            serving = self.base["serving"]
            template = serving["monolithic"] if role == "mixed" else serving["disaggregated"][role]
            engine = dict(template["engine"]) | {"max_num_batched_tokens": chunk, "max_num_seqs": seqs}
            try:
                pool = pool_spec(f"plan {role} pool", {"instances": 1, "tp": choice.tp, "engine": engine}, role,
                                 self.model, gpu_from_config(group_entry("hardware", choice.gpu)))
                self._rps[key] = instance_capacity_rps(self.model, pool, self.lengths, self.slo.tpot_s)
            except ConfigError:
                self._rps[key] = None
        return self._rps[key]

    def minimal_instances(self, family: Family, target_rps: float) -> tuple[int, ...] | None:
        """Fewest instances per pool whose bound reaches `target_rps`; None if the simulator
        refuses a pool's config or a pool serves nothing within the SLO."""
        roles = ("mixed",) if family.architecture == "monolithic" else ("prefill", "decode")
        rates = [self._instance_rps(role, p, family.max_num_batched_tokens, family.max_num_seqs)
                 for role, p in zip(roles, family.pools)]
        if any(r is None or r <= 0 for r in rates):
            return None
        return tuple(max(1, math.ceil(target_rps / r)) for r in rates)


# One worker process holds the base config and the search workload, sent once.
_WORKER: dict[str, Any] = {}


def _init_worker(base: Mapping[str, Any], workload: Workload, slo: SLO) -> None:
    _WORKER.update(base=base, workload=workload, slo=slo)


def _simulate(candidate: Candidate) -> dict[str, Any]:
    cfg = experiment_config(_WORKER["base"], candidate)
    spec = cluster_plans(cfg)[candidate.family.architecture]
    return measure(spec, _WORKER["workload"], _WORKER["slo"])[0]


class _Inline:
    """The executor interface for jobs=1: run in this process (tests, debugging)."""

    def __init__(self, initializer: Callable[..., None], initargs: tuple):
        initializer(*initargs)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, cancel_futures: bool = False) -> None:
        pass


def search(base: Mapping[str, Any], space: Space, workload: Workload, target_rps: float, slo: SLO,
           top_k: int = 3, objective: str = "cost", jobs: int = 2, progress: bool = True) -> Search:
    """Simulate candidates of `space` on `workload` (already at the target rate) as described in
    the module docstring; `target_rps` is the rate the capacity bound must reach."""
    bounds = InstanceBounds(base, Lengths(float(workload.prompt_tokens.mean()), float(workload.output_tokens.mean())), slo)
    queue: list[Candidate] = []
    considered = infeasible = pruned = 0
    for family in families(space):
        everything = sum(1 for _ in candidates(family, space.max_gpus, tuple(1 for _ in family.pools)))
        considered += everything
        low = bounds.minimal_instances(family, target_rps)
        if low is None:
            infeasible += 1
            continue
        kept = list(candidates(family, space.max_gpus, low))
        pruned += everything - len(kept)
        queue += kept
    queue.sort(key=sort_key(objective))
    result = Search([], considered, infeasible, pruned, 0)
    # No time-left estimate: most candidates are decided in bulk once the top configurations are
    # known, so the rate so far says nothing about the time left.
    bar = tqdm(total=len(queue), desc="plan", unit="config", disable=not progress,
               bar_format="{desc}: {n_fmt}/{total_fmt} configurations decided [{elapsed}{postfix}]")

    key = sort_key(objective)

    def decided(c: Candidate) -> bool:
        """Known without simulating: worse than top_k passes, grown from a pass, of a passing
        shape, or shrunk from a failure."""
        ranks = [key(e.candidate)[:2] for e in ranked(result, c.family.architecture, objective)]
        if len(ranks) >= top_k and key(c)[:2] > ranks[top_k - 1]:
            return True
        # A pass of the same shape (other engine limits or link) costs the same: c cannot rank higher.
        return any(c.dominates(e.candidate) or shape(c) == shape(e.candidate) if e.passed
                   else e.candidate.dominates(c) for e in result.evaluated)

    executor = (_Inline(_init_worker, (base, workload, slo)) if jobs == 1 else
                ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(base, workload, slo)))
    running: dict[Future, Candidate] = {}
    pending = deque(queue)
    try:
        while pending or running:
            while pending and len(running) < jobs:
                c = pending.popleft()
                if decided(c):
                    result.skipped += 1
                    bar.update(1)
                else:
                    running[executor.submit(_simulate, c)] = c
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                c = running.pop(future)
                cost, gpus = cost_and_gpus(c)
                result.evaluated.append(Evaluated(c, cost, gpus, future.result()))
                bar.update(1)
            best = min((e.cost_per_hour for e in result.evaluated if e.passed), default=float("nan"))
            bar.set_postfix(simulated=len(result.evaluated), passed=sum(e.passed for e in result.evaluated),
                            best=f"${best:.2f}/h")
    finally:
        executor.shutdown(cancel_futures=True)
        bar.close()
    return result



def _measure_replicate(args: tuple[Mapping[str, Any], Candidate, Mapping[str, Any], int, SLO]) -> dict[str, Any]:
    base, candidate, workload_cfg, seed, slo = args
    spec = cluster_plans(experiment_config(base, candidate))[candidate.family.architecture]
    return measure(spec, build_workload(workload_cfg, seed), slo)[0]


def confirm(base: Mapping[str, Any], candidate: Candidate, workload_cfg: Mapping[str, Any], seed: int,
            slo: SLO, windows: int, jobs: int) -> dict[str, Any]:
    """`candidate` on `windows` replicates of the whole workload: attainment mean and 95% CI
    half-width, the worst window and which windows were flagged."""
    args = [(base, candidate, w, s, slo) for w, s in replicates(workload_cfg, seed, windows)]
    if jobs == 1:
        runs = [_measure_replicate(a) for a in args]
    else:
        with ProcessPoolExecutor(jobs) as pool:
            runs = list(pool.map(_measure_replicate, args))
    mean, half = mean_ci([r["slo_attainment"] for r in runs])
    pooled = sum(r["slo_attainment"] * r["requests"] for r in runs) / sum(r["requests"] for r in runs)
    return {"attainment": pooled, "mean": mean, "ci": half, "worst": min(r["slo_attainment"] for r in runs),
            "windows": len(runs), "passed": pooled >= slo.attainment_target,
            "flags": sorted({f for r in runs for f in ("unsteady", "saturated") if r[f]})}


def _confirm_line(arch: str, e: Evaluated, c: Mapping[str, Any]) -> str:
    return (f"  {arch} {e.candidate.label}: attainment {c['attainment']:.1%} (window mean {c['mean']:.1%} "
            f"± {c['ci']:.1%}, 95% CI over {c['windows']} windows; worst {c['worst']:.1%}), "
            f"flags: {', '.join(c['flags']) or 'none'} -> {'confirmed' if c['passed'] else 'REJECTED'}")


def _cell(e: Evaluated | None) -> list[str]:
    if e is None:
        return ["-", "", ""]
    s = e.summary
    return [e.candidate.label, f"{e.gpus} GPUs, ${e.cost_per_hour:.2f}/h",
            f"attainment {s['slo_attainment']:.1%}, TTFT p90 {s['ttft_p90_s'] * 1e3:.0f} ms, "
            f"TPOT p99 {s['tpot_p99_s'] * 1e3:.1f} ms"]


def shape(c: Candidate) -> tuple:
    """GPUs, TP and instances of each pool: what a configuration costs, without its engine limits or link."""
    return c.family.architecture, c.family.pools, c.instances


def ranked(result: Search, arch: str, objective: str) -> list[Evaluated]:
    """Passing configurations of `arch`, best first (ties: the higher attainment first), one per
    cluster shape (GPUs, TP and instances of each pool): engine-limit and link variants of one
    shape would otherwise fill the list."""
    key = sort_key(objective)
    best: dict[tuple, Evaluated] = {}
    for e in sorted(result.passes(arch), key=lambda e: (key(e.candidate)[:2], -e.summary["slo_attainment"])):
        best.setdefault(shape(e.candidate), e)
    return list(best.values())


def format_plan(result: Search, slo: SLO, top_k: int, objective: str,
                confirmed: Mapping[str, tuple[Evaluated, Mapping[str, Any]]], checks: list[str]) -> str:
    """Side-by-side top configurations of the search, the confirmation runs and the winner
    (among the confirmed ones when confirmation ran, else among the search's passes)."""
    archs = ("monolithic", "disaggregated")
    best = {a: ranked(result, a, objective)[:top_k] for a in archs}
    width = max([60] + [len(e.candidate.label) + 2 for a in archs for e in best[a]])
    lines = [f"{'':5}{archs[0]:<{width}}{archs[1]}", "-" * (5 + 2 * width)]
    for rank in range(top_k):
        cells = [_cell(best[a][rank] if rank < len(best[a]) else None) for a in archs]
        for i, (left, right) in enumerate(zip(*cells)):
            lines.append(f"{(str(rank + 1) if i == 0 else ''):5}{left:<{width}}{right}")
    if checks:
        lines += ["", "on the whole workload:"] + checks
    finalists = ([e for e, _ in confirmed.values()] if checks else [b[0] for b in best.values() if b])
    key = sort_key(objective)
    finalists.sort(key=lambda e: (key(e.candidate)[:2], -e.summary["slo_attainment"]))
    if not finalists:
        lines.append("\nno configuration met the SLO: raise plan.max_gpus or allow more GPU kinds")
        return "\n".join(lines)
    win = finalists[0]
    arch = win.candidate.family.architecture
    lines.append(f"\nwinner: {arch} {win.candidate.label}: {win.gpus} GPUs, ${win.cost_per_hour:.2f}/h")
    if len(finalists) > 1:
        other = finalists[1]
        saving = 1 - win.cost_per_hour / other.cost_per_hour
        lines.append(f"margin over the best {other.candidate.family.architecture} ({other.candidate.label}, "
                     f"{other.gpus} GPUs, ${other.cost_per_hour:.2f}/h): {saving:.1%} lower cost "
                     f"(${other.cost_per_hour - win.cost_per_hour:.2f}/h), {other.gpus - win.gpus} GPUs fewer"
                     + ("; a tie on the objective, decided by attainment" if key(win.candidate)[:2] ==
                        key(other.candidate)[:2] else ""))
    else:
        lines.append(f"margin: no {'disaggregated' if arch == 'monolithic' else 'monolithic'} configuration passed")
    return "\n".join(lines)


def results_table(result: Search) -> pd.DataFrame:
    """One row per simulated configuration: its choices, then its metrics."""
    rows = []
    for e in result.evaluated:
        f = e.candidate.family
        rows.append({"label": e.candidate.label, "architecture": f.architecture,
                     "gpu_kinds": "+".join(p.gpu for p in f.pools), "tps": "+".join(str(p.tp) for p in f.pools),
                     "instances": "+".join(map(str, e.candidate.instances)), "link": f.link,
                     "max_num_batched_tokens": f.max_num_batched_tokens, "max_num_seqs": f.max_num_seqs,
                     "gpus": e.gpus, "cost_per_hour": e.cost_per_hour, "passed": e.passed} | e.summary)
    return pd.DataFrame(rows)


def run_plan(cfg: Mapping[str, Any], out_dir: Path | None = None) -> str:
    """The plan report for a composed `configs/plan.yaml` config (its header line is printed
    first, before the progress bar)."""
    p = cfg["plan"]
    slo = slo_from_config(cfg["slo"])
    whole = build_workload(cfg["workload"], int(cfg["seed"]))
    scale = float(p["target_rps"]) / offered_rps(whole) if p["target_rps"] else 1.0
    target_cfg = scaled(cfg["workload"], scale)
    target_rps = offered_rps(build_workload(target_cfg, int(cfg["seed"])))
    search_workload = busiest(build_workload(target_cfg, int(cfg["seed"])), int(p["max_requests"]))
    space = Space.from_config(p)
    header = (f"target {target_rps:.2f} req/s ({whole.source}; then x{scale:.3g}); SLO TTFT <= {slo.ttft_s * 1e3:g} ms, "
              f"TPOT <= {slo.tpot_s * 1e3:g} ms for {slo.attainment_target:.0%}; GPUs {', '.join(space.gpus)}; "
              f"up to {space.max_gpus} GPUs; objective: {p['objective']}")
    print(header, flush=True)
    result = search(cfg, space, search_workload, target_rps, slo, int(p["top_k"]), p["objective"], int(p["jobs"]))
    confirmed, checks = {}, []
    for arch in ("monolithic", "disaggregated"):
        for e in ranked(result, arch, p["objective"])[:int(p["top_k"]) if int(p["confirm_windows"]) > 0 else 0]:
            check = confirm(cfg, e.candidate, target_cfg, int(cfg["seed"]), slo, int(p["confirm_windows"]),
                            int(p["jobs"]))
            checks.append(_confirm_line(arch, e, check))
            if check["passed"]:
                confirmed[arch] = (e, check)
                break
    searched = (f"{result.considered} configurations within {space.max_gpus} GPUs: {result.infeasible_families} "
                f"families refused by the config checks, {result.pruned} pruned by the capacity bound, "
                f"{result.skipped} decided without simulating, {len(result.evaluated)} simulated on the busiest "
                f"{len(search_workload)} requests ({search_workload.duration_s:.0f} s)")
    report = searched + "\n\n" + format_plan(result, slo, int(p["top_k"]), p["objective"], confirmed, checks)
    if out_dir is not None:
        results_table(result).to_csv(out_dir / "plan_results.csv", index=False)
    return report


@hydra.main(version_base=None, config_path="../configs", config_name="plan")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        print(run_plan(as_dict(cfg), out_dir))
    except (ConfigError, WorkloadError) as error:
        raise SystemExit(f"error: {error}") from None
    print(f"\nresults written to {out_dir}/plan_results.csv")


if __name__ == "__main__":
    main()
