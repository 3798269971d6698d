"""Sweeps: a multirun that dies half-way restarts where it stopped, with the joblib launcher;
the Ray launcher config is well-formed (Ray itself is not needed)."""

import subprocess
import sys

import pandas as pd
import yaml

from experiments.configs import CONFIGS
from experiments.sweep_progress import job_keys

SWEEP = [sys.executable, "-m", "experiments.sweep", "-m", "workload=poisson", "workload.num_requests=20"]


def sweep(tmp_path, *overrides):
    return subprocess.run([*SWEEP, f"sweep.table={tmp_path}/results.csv", f"hydra.sweep.dir={tmp_path}/runs",
                           *overrides], capture_output=True, text=True, cwd=CONFIGS.parent)


def test_an_interrupted_sweep_restarts_where_it_stopped(tmp_path):
    # The third job fails (negative rate): a sweep of one job per batch stops there.
    crashed = sweep(tmp_path, "hydra/launcher=basic", "hydra.sweeper.max_batch_size=1", "workload.rate_scale=1,2,-1,3")
    assert crashed.returncode != 0
    before = pd.read_csv(tmp_path / "results.csv")
    assert sorted(before["workload.rate_scale"].unique()) == [1, 2]
    assert len(before) == 4                                  # two runs x two architectures
    resumed = sweep(tmp_path, "workload.rate_scale=1,2,3")   # joblib, two processes
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("[sweep] skip") == 2
    assert "3/3 runs done" in resumed.stdout
    after = pd.read_csv(tmp_path / "results.csv")
    assert sorted(after["workload.rate_scale"].unique()) == [1, 2, 3]
    assert after["run_key"].nunique() == 3 and len(after) == 6
    pd.testing.assert_frame_equal(after.iloc[:4], before, check_dtype=False)
    assert {"architecture", "gpus", "slo_attainment", "cost_per_million_output_tokens", "saturated"} <= set(after)


def test_jobs_of_a_sweep():
    keys = job_keys(["workload.rate_scale=1,2,4", "serving=monolithic,disaggregated", "seed=0", "sweep.name=x"])
    assert len(keys) == 6 and "seed=0 serving=monolithic workload.rate_scale=1" in keys
    assert len(job_keys(["workload.rate_scale=range(1,5)"])) == 4


def test_ray_launcher_config_targets_an_existing_cluster():
    cfg = yaml.safe_load((CONFIGS / "hydra" / "launcher" / "ray_cluster.yaml").read_text())
    assert cfg["_target_"] == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert cfg["ray"]["init"]["address"] == "auto"
