"""Shared fixtures: catalogue entries loaded from the project's own config files."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sim.catalog import gpu_from_config, link_from_config, model_from_config
from sim.experiment import as_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def compose_config(*overrides: str) -> dict:
    """The config `python -m sim <overrides>` would run, as plain containers."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return as_dict(compose(config_name="config", overrides=list(overrides)))


def load_yaml(group: str, name: str) -> dict:
    import yaml

    return yaml.safe_load((CONFIGS / group / f"{name}.yaml").read_text())


@pytest.fixture(scope="session")
def llama8b():
    return model_from_config(load_yaml("model", "llama3.1-8b"))


@pytest.fixture(scope="session")
def h100():
    return gpu_from_config(load_yaml("hardware", "h100-sxm"))


@pytest.fixture(scope="session")
def rdma():
    return link_from_config(load_yaml("network", "rdma"))


def run_from_source(nodeid: str) -> None:
    """Run the test `nodeid` in a fresh pytest with the simulator's sources instead of its compiled
    modules (sim/compiled.py): for a test that patches a compiled class, which compiled callers
    would not see. Fails with that run's output if the test fails there."""
    from sim.compiled import PURE_PYTHON_VARIABLE

    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", nodeid], cwd=ROOT,
                           capture_output=True, text=True, env={**os.environ, PURE_PYTHON_VARIABLE: "1"})
    assert child.returncode == 0, child.stdout[-4000:] + child.stderr[-2000:]
