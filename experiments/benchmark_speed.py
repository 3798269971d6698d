"""Simulator speed: wall time and simulated requests per second on representative runs.

    python -m experiments.benchmark_speed            # all cases
    python -m experiments.benchmark_speed --quick    # the default run only

Each case composes the same config as `python -m sim <overrides>` and times `sim.run.simulate`
alone (workload building and output writing excluded). `x real time` is simulated span over
wall time. Run it on an otherwise idle machine and compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from hydra import compose, initialize_config_dir

from sim.experiment import as_dict, plan
from sim.run import simulate
from sim.workload import build_workload

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

CASES: dict[str, list[str]] = {
    "default (conv 1h, 2 GPUs)": [],
    # four shifted copies of the hour superposed: 77k requests, burstiness kept (issue 5's target case)
    "conv 1h x4 copies, 32 GPUs": ["workload.copies=4", "serving.monolithic.instances=32",
                                   "serving.disaggregated.prefill.instances=8",
                                   "serving.disaggregated.decode.instances=24"],
}


def run_case(overrides: list[str]) -> list[dict]:
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = as_dict(compose(config_name="config", overrides=overrides))
    workload = build_workload(cfg["workload"], cfg["seed"])
    rows = []
    for name, spec in plan(cfg).items():
        result = simulate(spec, workload, cfg["metrics"]["util_bin_s"])
        steps = int(result.instances["steps"].sum())
        rows.append({"architecture": name, "gpus": spec.num_gpus, "requests": len(workload),
                     "steps": steps, "wall_s": result.wall_s, "req_per_s": len(workload) / result.wall_s,
                     "steps_per_s": steps / result.wall_s, "x_real_time": result.end_s / result.wall_s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the default run")
    args = parser.parse_args()
    cases = dict(list(CASES.items())[:1]) if args.quick else CASES
    print(f"python {platform.python_version()} on {platform.machine()}, one process")
    header = f"{'case':30} {'architecture':14} {'GPUs':>5} {'requests':>9} {'steps':>10} {'wall s':>8} " \
             f"{'req/s':>8} {'steps/s':>9} {'x real':>8}"
    print(header)
    print("-" * len(header))
    for case, overrides in cases.items():
        for row in run_case(overrides):
            print(f"{case:30} {row['architecture']:14} {row['gpus']:>5} {row['requests']:>9} {row['steps']:>10} "
                  f"{row['wall_s']:>8.1f} {row['req_per_s']:>8.0f} {row['steps_per_s']:>9.0f} "
                  f"{row['x_real_time']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
