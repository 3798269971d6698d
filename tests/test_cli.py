"""The command line as a user runs it: the main job, a single architecture, a Hydra sweep."""

import json
import subprocess
import sys

import pandas as pd

from sim.table import REQUEST_COLUMNS


def run_sim(*args, timeout=600):
    done = subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_main_job_prints_the_side_by_side_table_and_writes_results(tmp_path):
    out = run_sim("workload.window.duration_s=120", f"hydra.run.dir={tmp_path}")
    for label in ("TTFT p99 (ms)", "ITL p99 (ms)", "goodput", "cost per 1M output tokens", "monolithic",
                  "disaggregated", "compute utilisation", str(tmp_path)):
        assert label in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["runs"]) == {"monolithic", "disaggregated"}
    assert summary["runs"]["monolithic"]["gpus"] == summary["runs"]["disaggregated"]["gpus"]
    for name in ("monolithic", "disaggregated"):
        table = pd.read_parquet(tmp_path / f"requests_{name}.parquet")
        assert list(table.columns) == list(REQUEST_COLUMNS)
        assert len(table) == summary["runs"][name]["requests"] > 100
        assert (tmp_path / f"utilisation_{name}.png").stat().st_size > 10_000
    for plot in ("ttft_cdf.png", "itl_cdf.png"):
        assert (tmp_path / plot).stat().st_size > 10_000


def test_single_architecture_with_overrides(tmp_path):
    out = run_sim("serving=disaggregated", "serving.prefill.instances=2", "serving.decode.instances=6",
                  "workload.rate_scale=2", "workload.window.duration_s=60", "output.plots=false",
                  f"hydra.run.dir={tmp_path}")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["runs"]) == ["disaggregated"]
    assert summary["runs"]["disaggregated"]["gpus"] == 8
    assert "2P x TP1" in out and "6D x TP1" in out


def test_hydra_sweep_runs_every_combination(tmp_path):
    run_sim("-m", "serving=monolithic,disaggregated", "workload.rate_scale=1,2", "workload.window.duration_s=30",
            "output.plots=false", f"hydra.sweep.dir={tmp_path}")
    summaries = sorted(tmp_path.glob("*/summary.json"))
    assert len(summaries) == 4
    rates = {json.loads(p.read_text())["config"]["workload"]["rate_scale"] for p in summaries}
    assert rates == {1.0, 2.0}
