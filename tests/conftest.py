"""Shared fixtures: catalogue entries loaded from the project's own config files."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sim.catalog import gpu_from_config, link_from_config, model_from_config
from sim.experiment import as_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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
