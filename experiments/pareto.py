"""Pareto fronts of the two architectures at one GPU budget.

    python -m experiments.pareto                                   # configs/pareto.yaml
    python -m experiments.pareto workload=azure_code 'pareto.rate_scales=[1,2,4]'

Each configuration (monolithic instance counts, disaggregated P:D splits) is simulated once
per rate scale; from those runs:

* throughput per GPU (output tok/s/GPU) against the per-user token rate (1 / median TPOT):
  what a user gets against what the operator gets, one curve per configuration;
* cost per million output tokens against SLO tightness: both SLO limits multiplied by each
  factor of `pareto.slo_factors`; at each factor a configuration runs at the highest simulated
  rate whose attainment (recomputed from the stored per-request table, no new simulation)
  still meets the target, and costs what that run cost; the cheaper configuration of each
  architecture is plotted.

Writes pareto.csv (one row per run and SLO factor), throughput_vs_user_rate.png and
cost_vs_slo.png into Hydra's run directory and prints the cost table.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import hydra
import matplotlib
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from sim.experiment import as_dict, plan, slo_from_config  # noqa: E402
from sim.metrics import SLO, slo_mask  # noqa: E402
from sim.workload import build_workload  # noqa: E402

from experiments.evaluate import measure, scaled  # noqa: E402


def configurations(cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Experiment configs keyed by label: `pareto.monolithic` instance counts and
    `pareto.disaggregated` "P:D" splits, the pools otherwise as configured."""
    out = {}
    for n in cfg["pareto"]["monolithic"]:
        serving = cfg["serving"]["monolithic"] | {"instances": int(n)}
        out[f"mono {n}"] = dict(cfg) | {"serving": serving}
    for split in cfg["pareto"]["disaggregated"]:
        p, d = (int(x) for x in str(split).split(":"))
        base = cfg["serving"]["disaggregated"]
        serving = base | {"prefill": base["prefill"] | {"instances": p}, "decode": base["decode"] | {"instances": d}}
        out[f"disagg {p}:{d}"] = dict(cfg) | {"serving": serving}
    return out


def _run(args: tuple[str, Mapping[str, Any], float]) -> tuple[str, float, dict[str, Any], pd.DataFrame]:
    label, cfg, scale = args
    spec = next(iter(plan(cfg).values()))
    slo = slo_from_config(cfg["slo"])
    summary, result = measure(spec, build_workload(scaled(cfg["workload"], scale), int(cfg["seed"])), slo)
    return label, scale, summary, result.requests[["status", "ttft_s", "tpot_s"]]


def under_slo(requests: pd.DataFrame, slo: SLO) -> dict[str, Any]:
    attainment = float(slo_mask(requests, slo).mean())
    return {"ttft_s_limit": slo.ttft_s, "tpot_s_limit": slo.tpot_s, "attainment": attainment,
            "meets": attainment >= slo.attainment_target}


def pareto_table(cfg: Mapping[str, Any], jobs: int) -> pd.DataFrame:
    """One row per (configuration, rate scale, SLO factor)."""
    slo = slo_from_config(cfg["slo"])
    args = [(label, c, float(s)) for label, c in configurations(cfg).items() for s in cfg["pareto"]["rate_scales"]]
    with ProcessPoolExecutor(jobs) as pool:
        runs = list(pool.map(_run, args))
    rows = []
    for label, scale, summary, requests in runs:
        for factor in cfg["pareto"]["slo_factors"]:
            tight = replace(slo, ttft_s=slo.ttft_s * factor, tpot_s=slo.tpot_s * factor)
            rows.append({"config": label, "architecture": summary["architecture"], "rate_scale": scale,
                         "slo_factor": float(factor), "gpus": summary["gpus"],
                         "offered_rps": summary["offered_rps"],
                         "tok_per_s_per_gpu": summary["output_tokens_per_s_per_gpu"],
                         "user_tok_per_s": 1.0 / summary["tpot_p50_s"],
                         "cost_per_million_output_tokens": summary["cost_per_million_output_tokens"],
                         "saturated": summary["saturated"]} | under_slo(requests, tight))
    return pd.DataFrame(rows)


def cheapest_per_slo(table: pd.DataFrame) -> pd.DataFrame:
    """Per architecture and SLO factor: the lowest cost per million tokens among passing runs
    (a configuration's best is its highest passing rate, which is also its cheapest)."""
    passing = table[table["meets"]]
    best = passing.loc[passing.groupby(["architecture", "slo_factor"])["cost_per_million_output_tokens"].idxmin()]
    return best[["architecture", "slo_factor", "config", "rate_scale", "offered_rps",
                 "cost_per_million_output_tokens", "attainment"]].reset_index(drop=True)


def plot(table: pd.DataFrame, out_dir: Path) -> None:
    at_nominal = table[table["slo_factor"] == 1.0]
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, runs in at_nominal.groupby("config"):
        runs = runs.sort_values("rate_scale")
        ax.plot(runs["user_tok_per_s"], runs["tok_per_s_per_gpu"], "-o" if label.startswith("mono") else "--s",
                label=label)
    ax.set(xlabel="per-user token rate (1 / median TPOT, tok/s)", ylabel="throughput per GPU (output tok/s)",
           title="throughput vs interactivity (rate scale along each curve)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "throughput_vs_user_rate.png", dpi=120)
    plt.close(fig)
    best = cheapest_per_slo(table)
    fig, ax = plt.subplots(figsize=(6, 4))
    for arch, rows in best.groupby("architecture"):
        ax.plot(rows["slo_factor"], rows["cost_per_million_output_tokens"], "-o", label=arch)
    ax.set(xscale="log", xlabel="SLO factor (x TTFT and TPOT limits; smaller = tighter)",
           ylabel="USD per million output tokens", title="cost vs SLO tightness (cheapest passing run)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "cost_vs_slo.png", dpi=120)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs", config_name="pareto")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg = as_dict(cfg)
    table = pareto_table(cfg, int(cfg["pareto"]["jobs"]))
    table.to_csv(out_dir / "pareto.csv", index=False)
    plot(table, out_dir)
    print(cheapest_per_slo(table).to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"\nwritten to {out_dir}: pareto.csv, throughput_vs_user_rate.png, cost_vs_slo.png")


if __name__ == "__main__":
    main()
