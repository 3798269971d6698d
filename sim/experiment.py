"""One experiment from a composed config: build the workload and the cluster plans, run the
simulator for each architecture asked, and write tables, summary and plots to a directory.

`serving.architecture` is `monolithic`, `disaggregated`, or `compare` (the default), which
runs `serving.monolithic` and `serving.disaggregated` on the same workload.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from sim.catalog import gpu_from_config, link_from_config, model_from_config
from sim.config import ClusterSpec, ConfigError, cluster_spec
from sim.faults import fault_plan
from sim.metrics import SLO, summarize
from sim.report import format_table
from sim.run import RunResult, simulate
from sim.workload import build_workload


def as_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


HARDWARE_DIR = Path(__file__).resolve().parents[1] / "configs" / "hardware"


def resolve_hardware_names(serving: Mapping[str, Any]) -> dict[str, Any]:
    """`serving` with every pool's `hardware: <name>` replaced by configs/hardware/<name>.yaml."""
    out = {}
    for key, value in serving.items():
        if key == "hardware" and isinstance(value, str):
            path = HARDWARE_DIR / f"{value}.yaml"
            if not path.exists():
                names = sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))
                raise ConfigError(f"a serving pool's hardware is {value!r}; choose one of {names}")
            value = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        elif isinstance(value, Mapping):
            value = resolve_hardware_names(value)
        out[key] = value
    return out


def plan(cfg: Mapping[str, Any]) -> dict[str, ClusterSpec]:
    """Cluster plans for every architecture the config asks for, all checked before any runs.
    A pool may name its own GPU (`serving.prefill.hardware: a100-80gb`); the others use `hardware`."""
    model = model_from_config(cfg["model"])
    gpu = gpu_from_config(cfg["hardware"])
    link = link_from_config(cfg["network"])
    serving = resolve_hardware_names(cfg["serving"])
    if serving.get("architecture") == "compare":
        specs = {name: cluster_spec(serving[name], model, gpu, link, where=f"serving.{name}")
                 for name in ("monolithic", "disaggregated")}
    else:
        spec = cluster_spec(serving, model, gpu, link)
        specs = {spec.architecture: spec}
    return specs


def slo_from_config(cfg: Mapping[str, Any]) -> SLO:
    slo = SLO(float(cfg["ttft_s"]), float(cfg["tpot_s"]), float(cfg.get("attainment_target", 0.9)))
    if slo.ttft_s <= 0 or slo.tpot_s <= 0 or not 0 < slo.attainment_target <= 1:
        raise ConfigError(f"slo: ttft_s and tpot_s must be > 0 and attainment_target in (0, 1], got {slo}")
    return slo


@dataclass
class Experiment:
    summaries: dict[str, dict[str, Any]]   # per run: the metrics of sim.metrics.summarize
    results: dict[str, RunResult]
    workload_source: str
    slo: SLO


def run_experiment(cfg: DictConfig | Mapping[str, Any], out_dir: Path | None = None,
                   plot: bool = True) -> Experiment:
    """Run every architecture of `cfg`; write results under `out_dir` when given."""
    cfg = as_dict(cfg)
    specs = plan(cfg)
    slo = slo_from_config(cfg["slo"])
    workload = build_workload(cfg["workload"], int(cfg["seed"]))
    faults = fault_plan(cfg.get("faults"))
    util_bin_s = float(cfg["metrics"]["util_bin_s"])
    results = {name: simulate(spec, workload, util_bin_s, faults=faults, seed=int(cfg["seed"]))
               for name, spec in specs.items()}
    summaries = {name: summarize(r.spec, r.requests, r.itl, slo, r.utilisation) | {"sim_wall_s": r.wall_s}
                 for name, r in results.items()}
    if out_dir is not None:
        write_outputs(Path(out_dir), cfg, workload.source, slo, results, summaries, plot)
    return Experiment(summaries, results, workload.source, slo)


def write_outputs(out_dir: Path, cfg: Mapping[str, Any], workload_source: str, slo: SLO,
                  results: dict[str, RunResult], summaries: dict[str, dict[str, Any]], plot: bool) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, result in results.items():
        result.requests.to_parquet(out_dir / f"requests_{name}.parquet", index=False)
        result.utilisation.to_parquet(out_dir / f"utilisation_{name}.parquet", index=False)
        result.instances.to_csv(out_dir / f"instances_{name}.csv", index=False)
    document = {"workload": workload_source, "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s,
                                                     "attainment_target": slo.attainment_target},
                "runs": summaries, "config": cfg}
    (out_dir / "summary.json").write_text(json.dumps(document, indent=2, default=float))
    if plot:
        from sim import plots   # matplotlib takes ~1 s to import: only runs that plot pay for it

        plots.latency_cdfs({n: r.requests for n, r in results.items()}, {n: r.itl for n, r in results.items()},
                           out_dir)
        plots.utilisation_over_time({n: r.utilisation for n, r in results.items()}, out_dir)


def slo_line(slo: SLO) -> str:
    return (f"SLO: TTFT <= {slo.ttft_s * 1e3:g} ms and TPOT <= {slo.tpot_s * 1e3:g} ms; "
            f"target attainment {slo.attainment_target:.0%}")


def print_report(cfg: DictConfig | Mapping[str, Any], experiment: Experiment, out_dir: Path) -> None:
    summaries = experiment.summaries
    print(f"workload: {experiment.workload_source}")
    print(f"model: {cfg['model']['name']} on {cfg['hardware']['name']}, KV link: {cfg['network']['name']}")
    gpus = {s["gpus"] for s in summaries.values()}
    if len(gpus) > 1:
        print(f"note: the runs use different GPU counts {sorted(gpus)}; compare per-GPU and cost rows")
    print()
    print(format_table(summaries, slo_line(experiment.slo)))
    print(f"\nresults written to {out_dir}: requests_*.parquet (one row per request), summary.json, "
          f"utilisation_*.parquet, *.png")
