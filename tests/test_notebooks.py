"""The cost notebooks run end to end on a small sweep, so they cannot rot."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

from experiments import results_table
from experiments.configs import compose_config
from experiments.sweep import rows

NOTEBOOKS = Path(__file__).resolve().parents[1] / "experiments"


def small_sweep(table: Path) -> None:
    """Both traces at two loads, both architectures: the sweep of configs/sweep_cost.yaml in miniature."""
    for trace in ("azure_conv", "azure_code"):
        for scale in (1, 4):
            overrides = [f"workload={trace}", f"workload.rate_scale={scale}", "workload.max_requests=60",
                         "serving.monolithic.instances=1"]
            results_table.append(table, rows(overrides, compose_config(overrides, "sweep")))


def test_cost_comparison_notebook_runs_on_a_small_sweep(tmp_path, monkeypatch):
    table = tmp_path / "results.csv"
    small_sweep(table)
    monkeypatch.setenv("COST_SWEEP_RESULTS", str(table))
    notebook = nbformat.read(NOTEBOOKS / "cost_comparison.ipynb", as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = "".join(str(o.get("data", o.get("text", ""))) for c in notebook.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "azure_conv" in outputs and "azure_code" in outputs
    assert "valid" in outputs
