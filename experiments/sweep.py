"""Sweeps as Hydra multiruns: one job = one `python -m sim` experiment, one row per architecture
in the sweep's results table; a job whose overrides are already in the table is skipped, so an
interrupted sweep restarts where it stopped (run the same command again).

    python -m experiments.sweep -m workload.rate_scale=1,2,4 serving.monolithic.instances=2,4
    python -m experiments.sweep -m sweep.name=cost hydra/launcher=basic ...      # one process
    python -m experiments.sweep -m hydra/launcher=ray_cluster ...                # an existing Ray cluster

configs/sweep.yaml runs the jobs in parallel processes with the joblib launcher
(`hydra.launcher.n_jobs`) and writes the table to outputs/sweeps/<sweep.name>/results.csv.
Columns: run_key, one column per override (the config), then sim.metrics.summarize's metrics
and the steady-state flags (experiments.steady).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sim.experiment import as_dict, run_experiment
from sim.workload import build_workload

from experiments import results_table
from experiments.evaluate import offered_rps
from experiments.steady import steady_state
from experiments.sweep_progress import report


def rows(overrides: list[str], cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Run the experiment of `cfg`; one row per architecture: the run key, the overrides as
    columns, then the metrics."""
    config = dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
    experiment = run_experiment(cfg, out_dir=None, plot=False)
    rate = offered_rps(build_workload(cfg["workload"], int(cfg["seed"])))
    return [{results_table.KEY: results_table.run_key(overrides), **config, "workload_name": cfg["workload"]["name"],
             "offered_rps": rate, **summary,
             **steady_state(experiment.results[name].requests, experiment.slo)}
            for name, summary in experiment.summaries.items()]


@hydra.main(version_base=None, config_path="../configs", config_name="sweep")
def main(cfg: DictConfig) -> None:
    table = Path(cfg.sweep.table)
    overrides = results_table.run_overrides(list(HydraConfig.get().overrides.task))
    if results_table.run_key(overrides) in results_table.done_keys(table):
        print(f"[sweep] skip (already in {table}): {' '.join(overrides)}", flush=True)
        return
    results_table.append(table, rows(overrides, as_dict(cfg)))
    print(f"[sweep] {report(table)}: {' '.join(overrides)}", flush=True)


if __name__ == "__main__":
    main()
