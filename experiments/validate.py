"""`python -m experiments.validate [options] [hydra overrides]`: the simulator against the real
deployment, on the same config and the same requests.

For each load level (a rate scale of the trace) and both architectures (monolithic: 2 servers,
disaggregated: 1 prefill + 1 decode over the KV connector, one core each), the workload is
replayed on the real vLLM CPU deployment (`real.measure`) and simulated with the CPU hardware
entries and their named calibrations (`configs/hardware/cpu-core.yaml` for monolithic servers,
`cpu-core-nixl.yaml` for the servers with the KV connector). Both sides run without prefix
caching (the replayer's prompts repeat across loads). Written to `--out`:

* `errors.csv`: one row per architecture x load x metric x percentile: sim, real, relative error
  (sim / real - 1); metrics TTFT, TPOT, ITL (every gap), E2E at p50/p90/p99 and output throughput;
* `report.md`: the error table, the targets (median |error| over the p50 and p90 of TTFT, TPOT and
  E2E <= 10 %, throughput within 5 %; p99 reported apart) met or missed, and the monolithic /
  disaggregated ratio of each metric, real against simulated;
* `cdf_<load>.png`: TTFT, ITL and E2E CDFs, sim and real overlaid, both architectures;
* `phases.csv` (and a table in the report): the median time of each phase of a request
  (queueing, prefill, transfer, decode admission, decode), sim and real: where residuals come from;
* `real/<load>/requests_<arch>.parquet`, `tokens_<arch>.parquet`: what was measured, so that
  `--real-dir` can validate a new calibration without running vLLM again.

Each architecture's deployment is started once and serves the loads one after the other (light
first). Start the command under `flock /tmp/real_vllm.lock` where other jobs start deployments.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from experiments.configs import compose_config
from sim.catalog import load_config
from sim.kv_cache import GIB

ARCHITECTURES = ("monolithic", "disaggregated")
# Load levels: rate scales of the Azure conv trace from its start (5.5 req/s over the hour at 1x; its
# first minutes are quieter). With contexts clipped to 1024 tokens and 150 s of arrivals (the default), x0.12,
# x0.2 and x0.26 are light, medium and near saturation for the 2-core deployment, which saturates near x0.3
# (the simulator's scan; the split's single prefill core first).
LOADS = {"light": 0.12, "medium": 0.20, "heavy": 0.26}
CONNECTOR_HARDWARE = "cpu-core-nixl"   # the hardware entry of servers with a KV connector
PERCENTILES = (50, 90, 99)
LATENCIES = ("ttft", "tpot", "itl", "e2e")
TARGET_METRICS = ("ttft", "tpot", "e2e")       # the median-error target is over their p50 and p90
TARGET_MEDIAN_ABS = 0.10
TARGET_THROUGHPUT = 0.05


@dataclass
class Observed:
    """One run's latency samples (seconds) and throughput, sim or real."""

    ttft: np.ndarray
    tpot: np.ndarray
    e2e: np.ndarray
    itl: np.ndarray
    throughput: float      # output tokens per second, over first arrival to last completion
    completed: int
    requests: int
    phases: dict[str, float]   # median seconds per phase of a request (PHASES)

    @classmethod
    def of(cls, requests: pd.DataFrame, itl: np.ndarray) -> "Observed":
        done = requests[requests["status"] == "completed"]
        span = float(done["completion_s"].max()) if len(done) else math.nan
        return cls(done["ttft_s"].to_numpy(float), done["tpot_s"].dropna().to_numpy(float),
                   done["e2e_s"].to_numpy(float), np.asarray(itl, dtype=float),
                   float(done["output_tokens"].sum()) / span if span > 0 else math.nan, len(done), len(requests),
                   phases(done))

    def value(self, metric: str, percentile: int | None) -> float:
        if metric == "throughput":
            return self.throughput
        samples = getattr(self, metric)
        return float(np.percentile(samples, percentile)) if samples.size else math.nan


# Where a request's time goes, from the table's timestamps (the real ones from the gateway's headers and
# vLLM's per-request metrics, see real/results.py): the mechanisms the residuals are attributed to.
PHASES = {
    "queueing": ("arrival_s", "prefill_start_s"),          # router/proxy hop and the wait for a prefill step
    "prefill": ("prefill_start_s", "prefill_end_s"),       # the prompt's steps (with other work batched in)
    "transfer": ("transfer_start_s", "transfer_end_s"),    # the KV pull (disaggregated)
    "decode admission": ("transfer_end_s", "first_token_s"),   # KV arrived -> first token (disaggregated)
}


def phases(done: pd.DataFrame) -> dict[str, float]:
    """Median seconds of each phase (NaN where the table has no such times) and of the decode,
    the mean gap between output tokens (TPOT)."""
    out = {}
    for name, (start, end) in PHASES.items():
        spans = (done[end] - done[start]).dropna() if start in done and end in done else pd.Series(dtype=float)
        out[name] = float(spans.median()) if len(spans) else math.nan
    out["decode"] = float(done["tpot_s"].median()) if len(done) else math.nan
    return out


def phase_rows(runs: Mapping[tuple[str, str], Observed], load: str) -> list[dict[str, Any]]:
    rows = []
    for arch in ARCHITECTURES:
        sim, real = runs[("sim", arch)], runs[("real", arch)]
        for name in [*PHASES, "decode"]:
            s, r = sim.phases[name], real.phases[name]
            if np.isfinite(s) or np.isfinite(r):
                rows.append({"architecture": arch, "load": load, "phase": name, "sim": s, "real": r})
    return rows


def error_rows(sim: Observed, real: Observed, architecture: str, load: str) -> list[dict[str, Any]]:
    """One row per metric and percentile (and one for throughput): sim, real, sim / real - 1."""
    rows = []
    cases = [(m, p) for m in LATENCIES for p in PERCENTILES] + [("throughput", None)]
    for metric, percentile in cases:
        s, r = sim.value(metric, percentile), real.value(metric, percentile)
        rows.append({"architecture": architecture, "load": load, "metric": metric,
                     "percentile": "" if percentile is None else f"p{percentile}",
                     "sim": s, "real": r, "rel_error": s / r - 1.0 if r > 0 else math.nan})
    return rows


def target_summary(errors: pd.DataFrame) -> pd.DataFrame:
    """Per architecture and load: median |error| over p50/p90 of TTFT, TPOT and E2E, the
    throughput error, the median |error| at p99, and whether the targets are met."""
    out = []
    for (arch, load), group in errors.groupby(["architecture", "load"], sort=False):
        core = group[group["metric"].isin(TARGET_METRICS) & group["percentile"].isin(["p50", "p90"])]
        tail = group[group["metric"].isin(TARGET_METRICS) & (group["percentile"] == "p99")]
        throughput = float(group.loc[group["metric"] == "throughput", "rel_error"].iloc[0])
        median_abs = float(core["rel_error"].abs().median())
        out.append({"architecture": arch, "load": load, "median_abs_p50_p90": median_abs,
                    "throughput_error": throughput, "median_abs_p99": float(tail["rel_error"].abs().median()),
                    "meets_latency": median_abs <= TARGET_MEDIAN_ABS,
                    "meets_throughput": abs(throughput) <= TARGET_THROUGHPUT})
    return pd.DataFrame(out)


RATIO_CASES = (("itl", "p99"), ("itl", "p50"), ("ttft", "p50"), ("ttft", "p90"), ("tpot", "p50"), ("e2e", "p50"))


def ratio_rows(errors: pd.DataFrame) -> pd.DataFrame:
    """Monolithic / disaggregated, real and simulated, for the metrics that show the split's effect."""
    rows = []
    for load in dict.fromkeys(errors["load"]):
        at = errors[errors["load"] == load]
        for metric, percentile in RATIO_CASES:
            pick = at[(at["metric"] == metric) & (at["percentile"] == percentile)].set_index("architecture")
            if not set(ARCHITECTURES) <= set(pick.index):
                continue
            real = pick.loc["monolithic", "real"] / pick.loc["disaggregated", "real"]
            sim = pick.loc["monolithic", "sim"] / pick.loc["disaggregated", "sim"]
            rows.append({"load": load, "metric": f"{metric} {percentile}", "real_mono_over_disagg": real,
                         "sim_mono_over_disagg": sim, "same_direction": bool((real - 1) * (sim - 1) > 0
                                                                             or real == sim)})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ configs

def compose(overrides: Sequence[str]) -> dict[str, Any]:
    """The real deployment's config (`configs/deploy.yaml`) with `overrides`."""
    return compose_config(overrides, config_name="deploy")


# The trace carries no prefix information, and the replayer's prompts are seeded by request index, so
# request i of one load repeats request i of the load before on the same deployment: vLLM's prefix cache
# would serve it from cache. Both sides run without prefix caching.
NO_PREFIX_CACHING = [f"serving.{pool}.engine.enable_prefix_caching=false"
                     for pool in ("monolithic", "disaggregated.prefill", "disaggregated.decode")]


def load_overrides(rate_scale: float, duration_s: float, max_context: int) -> list[str]:
    """The Azure conv trace from its start, `duration_s` of replay at `rate_scale`, contexts clipped."""
    return ["workload=azure_conv", f"workload.rate_scale={rate_scale:g}",
            f"workload.window.duration_s={duration_s * rate_scale:g}", f"workload.max_context={max_context}",
            *NO_PREFIX_CACHING]


def sim_config(cfg: Mapping[str, Any], calibration: str | None,
               connector_calibration: str | None = None) -> dict[str, Any]:
    """The simulator's view of the real deployment: one 'GPU' per server's cores (cpu-core), its
    calibration, the engines' block size as the deployment rounds it, and a KV cache of the
    deployment's size (`real.kv_cache_gib`) and its max_model_len. The disaggregated pools run
    on `cpu-core-nixl` with `connector_calibration` when given: the same core, with a server
    whose KV connector works in every engine step."""
    from sim.catalog import model_from_config

    real = cfg["real"]
    hardware = load_config("hardware", str(real["profile"]["hardware"])) | {"calibration": calibration}
    model = model_from_config(cfg["model"])
    weights = model.weight_bytes

    def engine(e: Mapping[str, Any]) -> dict[str, Any]:
        # vLLM's KV cache = memory x utilisation - weights - reserve (sim.kv_cache): make it kv_cache_gib.
        reserve = (hardware["memory_bytes"] - weights) / GIB - int(real["kv_cache_gib"])
        multiple = int(real["block_size_multiple"])     # rounded up as real.plan.block_size does
        return dict(e) | {"block_size": -(-int(e.get("block_size", 16)) // multiple) * multiple,
                          "gpu_memory_utilization": 1.0, "reserve_gib": reserve,
                          # as real.plan: the engine's limit, at most the model's context
                          "max_model_len": min(int(e.get("max_model_len") or model.max_model_len),
                                               model.max_model_len)}

    serving = json.loads(json.dumps(cfg["serving"]))
    connector_hardware = (load_config("hardware", CONNECTOR_HARDWARE) | {"calibration": connector_calibration}
                          if connector_calibration else None)
    for arch in ARCHITECTURES:
        pool = serving[arch]
        if "engine" in pool:
            pool["engine"] = engine(pool["engine"])
        for role in ("prefill", "decode"):
            if role in pool:
                pool[role]["engine"] = engine(pool[role]["engine"])
                if connector_hardware:
                    pool[role]["hardware"] = connector_hardware
    network = load_config("network", str(real["profile"]["network"]))
    return dict(cfg) | {"hardware": hardware, "serving": serving, "network": network}


def simulate_load(cfg: Mapping[str, Any], calibration: str | None,
                  connector_calibration: str | None = None) -> dict[str, Observed]:
    from sim.experiment import plan
    from sim.run import simulate
    from sim.workload import build_workload

    cfg = sim_config(cfg, calibration, connector_calibration)
    workload = build_workload(cfg["workload"], int(cfg["seed"]))
    out = {}
    for arch, spec in plan(cfg).items():
        result = simulate(spec, workload, float(cfg["metrics"]["util_bin_s"]), seed=int(cfg["seed"]))
        gaps = result.itl.quantiles(np.linspace(0, 1, 4001)) if result.itl.total else np.array([])
        out[arch] = Observed.of(result.requests, gaps)
    return out


# ---------------------------------------------------------------------------------------- real

def measure_loads(cfg: Mapping[str, Any], loads: Mapping[str, dict[str, Any]], real_dir: Path) -> None:
    """Each architecture deployed once; every load replayed against it, tables written per load."""
    from real.deployment import Deployment
    from real.measure import measure
    from real.plan import plan_deployment

    logs = Path(tempfile.mkdtemp(prefix="validate-deploy-"))
    print(f"deployment logs and model in {logs}", flush=True)
    for arch in ARCHITECTURES:
        one = dict(cfg) | {"serving": cfg["serving"][arch]}
        plan = plan_deployment(one, logs / arch)
        with Deployment(plan, one["model"]):
            for load, workload in loads.items():
                started = time.time()
                measurement = measure(one | {"workload": workload}, plan.url)
                measurement.write(real_dir / load)
                s = measurement.summary
                print(f"real {arch} {load}: {s['completed']}/{s['requests']} completed in "
                      f"{time.time() - started:.0f} s", flush=True)
                (real_dir / load / f"summary_{arch}.json").write_text(json.dumps(s, indent=1, default=float))


def read_real(real_dir: Path, load: str, arch: str) -> Observed:
    """A measured run from its tables (no vLLM or aiohttp needed: the simulator's environment reads them)."""
    requests = pd.read_parquet(real_dir / load / f"requests_{arch}.parquet")
    tokens = pd.read_parquet(real_dir / load / f"tokens_{arch}.parquet")
    # Every gap between consecutive tokens of a request (as real.results.itl_gaps).
    gaps = tokens.sort_values(["request_id", "token_index"]).groupby("request_id")["time_s"].diff()
    return Observed.of(requests, gaps.dropna().to_numpy())


# -------------------------------------------------------------------------------------- report

def cdf_plot(load: str, runs: Mapping[tuple[str, str], Observed], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    styles = {"real": "-", "sim": "--"}
    colours = {"monolithic": "tab:blue", "disaggregated": "tab:orange"}
    for ax, metric, title in zip(axes, ("ttft", "itl", "e2e"), ("TTFT", "ITL (every gap)", "E2E")):
        for (source, arch), observed in runs.items():
            samples = np.sort(getattr(observed, metric))
            if samples.size:
                ax.plot(samples * 1e3, np.linspace(0, 1, samples.size), styles[source], color=colours[arch],
                        label=f"{arch} {source}")
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_title(f"{title}, load {load}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction")
    axes[-1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:+.1%}"


def markdown(errors: pd.DataFrame, targets: pd.DataFrame, ratios: pd.DataFrame, header: str) -> str:
    lines = [header, "", "## Error per metric (sim / real - 1)", ""]
    loads = list(dict.fromkeys(errors["load"]))
    columns = [(a, l) for a in ARCHITECTURES for l in loads]
    lines.append("| metric | " + " | ".join(f"{a[:4]}. {l}" for a, l in columns) + " |")
    lines.append("|---|" + "---|" * len(columns))
    for (metric, percentile), group in errors.groupby(["metric", "percentile"], sort=False):
        cells = []
        for a, l in columns:
            row = group[(group["architecture"] == a) & (group["load"] == l)]
            if row.empty:
                cells.append("")
                continue
            r = row.iloc[0]
            unit = 1.0 if metric == "throughput" else 1e3
            cells.append(f"{r['sim'] * unit:.4g} / {r['real'] * unit:.4g} ({_pct(r['rel_error'])})")
        name = "throughput (tok/s)" if metric == "throughput" else f"{metric.upper()} {percentile} (ms)"
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Cells: simulated / measured (relative error).", "", "## Targets", "",
              "| architecture | load | median abs error, p50+p90 of TTFT/TPOT/E2E (target <= 10%) | "
              "throughput error (target within 5%) | median abs error at p99 |", "|---|---|---|---|---|"]
    for r in targets.itertuples():
        lines.append(f"| {r.architecture} | {r.load} | {r.median_abs_p50_p90:.1%} "
                     f"{'met' if r.meets_latency else 'MISSED'} | {_pct(r.throughput_error)} "
                     f"{'met' if r.meets_throughput else 'MISSED'} | {r.median_abs_p99:.1%} |")
    lines += ["", "## Monolithic / disaggregated, real against simulated", "",
              "| load | metric | real mono/disagg | sim mono/disagg | same direction |", "|---|---|---|---|---|"]
    for r in ratios.itertuples():
        lines.append(f"| {r.load} | {r.metric} | {r.real_mono_over_disagg:.2f} | {r.sim_mono_over_disagg:.2f} | "
                     f"{'yes' if r.same_direction else 'NO'} |")
    return "\n".join(lines) + "\n"


def phase_markdown(table: pd.DataFrame) -> str:
    lines = ["", "## Where the time goes: median per phase, sim / real (ms)", "",
             "Queueing: arrival to the prompt's first step; prefill: the prompt's steps; transfer: the KV pull; "
             "decode admission: KV arrived to first token; decode: TPOT.", "",
             "| architecture | load | " + " | ".join([*PHASES, "decode"]) + " |", "|---|---|" + "---|" * (len(PHASES) + 1)]
    for (arch, load), group in table.groupby(["architecture", "load"], sort=False):
        cells = {r.phase: f"{r.sim * 1e3:.4g} / {r.real * 1e3:.4g}" for r in group.itertuples()}
        lines.append(f"| {arch} | {load} | " + " | ".join(cells.get(p, "") for p in [*PHASES, "decode"]) + " |")
    return "\n".join(lines) + "\n"


def validate(real_dir: Path, out: Path, loads: Mapping[str, float], duration_s: float, max_context: int,
             calibration: str | None, connector_calibration: str | None, overrides: Sequence[str], measure: bool,
             command: str) -> pd.DataFrame:
    base = compose([*NO_PREFIX_CACHING, *overrides])
    configs = {name: compose([*load_overrides(scale, duration_s, max_context), *overrides])
               for name, scale in loads.items()}
    if measure:
        measure_loads(base, {name: cfg["workload"] for name, cfg in configs.items()}, real_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, sources, phase_table = [], {}, []
    for name, cfg in configs.items():
        sim = simulate_load(cfg, calibration, connector_calibration)
        runs = {}
        for arch in ARCHITECTURES:
            real = read_real(real_dir, name, arch)
            runs |= {("real", arch): real, ("sim", arch): sim[arch]}
            rows += error_rows(sim[arch], real, arch, name)
            sources[name] = (f"{real.requests} requests ({real.completed} completed on the real {arch} run)")
        cdf_plot(name, runs, out / f"cdf_{name}.png")
        phase_table += phase_rows(runs, name)
    errors = pd.DataFrame(rows)
    errors.to_csv(out / "errors.csv", index=False, float_format="%.6g")
    targets, ratios = target_summary(errors), ratio_rows(errors)
    targets.to_csv(out / "targets.csv", index=False, float_format="%.4g")
    phase_frame = pd.DataFrame(phase_table)
    phase_frame.to_csv(out / "phases.csv", index=False, float_format="%.6g")
    ratios.to_csv(out / "ratios.csv", index=False, float_format="%.4g")
    header = (f"# Simulator vs real vLLM CPU deployment\n\n`{command}`\n\n"
              f"Calibrations `{calibration}` (monolithic servers) and `{connector_calibration}` (servers with the "
              f"KV connector); loads (rate scale of the Azure conv trace, "
              f"{duration_s:g} s of arrivals, contexts clipped to {max_context} tokens): "
              + ", ".join(f"{n} x{s:g} ({sources[n]})" for n, s in loads.items()))
    (out / "report.md").write_text(markdown(errors, targets, ratios, header) + phase_markdown(phase_frame))
    print((out / "report.md").read_text())
    return errors


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    import sys

    parser = argparse.ArgumentParser(prog="python -m experiments.validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/results/validation-cpu"))
    parser.add_argument("--real-dir", type=Path, default=None,
                        help="validate against tables measured before (<dir>/<load>/requests_<arch>.parquet) "
                             "instead of running vLLM; default: measure into <out>/real")
    parser.add_argument("--loads", default=",".join(f"{k}={v:g}" for k, v in LOADS.items()),
                        help="name=rate_scale,... of the Azure conv trace")
    parser.add_argument("--duration-s", type=float, default=150.0, help="seconds of arrivals per load")
    parser.add_argument("--max-context", type=int, default=1024, help="clip prompt + output to this many tokens")
    parser.add_argument("--calibration", default="cpu-core-measured",
                        help="named calibration (configs/calibration/) of the cpu-core entry; 'none': inline values")
    parser.add_argument("--connector-calibration", default="cpu-core-nixl-measured",
                        help=f"named calibration of {CONNECTOR_HARDWARE} for the disaggregated servers; 'none': they "
                             "use --calibration's cpu-core")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of configs/deploy.yaml")
    args = parser.parse_args(argv)
    loads = {k: float(v) for k, v in (item.split("=") for item in args.loads.split(","))}
    measure = args.real_dir is None
    real_dir = args.out / "real" if measure else args.real_dir
    command = " ".join(["python -m experiments.validate", *(sys.argv[1:] if argv is None else argv)])
    calibration = None if args.calibration == "none" else args.calibration
    connector = None if args.connector_calibration == "none" else args.connector_calibration
    return validate(real_dir, args.out, loads, args.duration_s, args.max_context, calibration, connector,
                    args.overrides, measure, command)


if __name__ == "__main__":
    main()
