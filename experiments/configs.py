"""Configs from Python: compose what `python -m <command> <overrides>` would run, and read one
entry of a config group (a GPU, a KV link) by name."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sim.experiment import as_dict

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> dict[str, Any]:
    """The resolved config of `configs/<config_name>.yaml` with Hydra `overrides`, as plain containers."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return as_dict(compose(config_name=config_name, overrides=list(overrides)))


def group_entry(group: str, name: str) -> dict[str, Any]:
    """configs/<group>/<name>.yaml as plain containers (a fresh copy: callers may change it)."""
    return copy.deepcopy(_load(group, name))


@functools.cache
def _load(group: str, name: str) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.load(CONFIGS / group / f"{name}.yaml"), resolve=True)


def group_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))
