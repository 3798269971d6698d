"""Progress of a Hydra multirun sweep: runs done out of the sweep's total, and time left.

`SweepProgress` is a Hydra callback: at the start of the multirun it counts the jobs the
sweep overrides expand to and records the count and the start time next to the results
table; each job then reports, from the table, how many runs are done and an estimate of the
time left (from the runs done since this start, so a resumed sweep estimates from its own pace).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from experiments import results_table


def job_keys(overrides: list[str]) -> list[str]:
    """Run keys (results_table.run_key) of the jobs a multirun expands `overrides` to."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [results_table.run_key(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def _state_file(table: str | Path) -> Path:
    return Path(table).with_name(Path(table).name + ".progress.json")


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params else {}
        overrides = list(config.hydra.overrides.task) + [f"{k}={v}" for k, v in params.items()]
        keys = job_keys(overrides)
        table = Path(config.sweep.table)
        state = _state_file(table)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"keys": keys, "started": time.time(),
                                     "done_at_start": len(set(keys) & results_table.done_keys(table))}))


def report(table: str | Path) -> str:
    """'k/N runs done, elapsed, about T left' for the multirun writing to `table` (k counts its
    runs already in the table, so a resumed sweep starts where it stopped)."""
    table = Path(table)
    state = _state_file(table)
    done_keys = results_table.done_keys(table)
    if not state.exists():
        return f"{len(done_keys)} runs in the table"
    s = json.loads(state.read_text())
    done = len(set(s["keys"]) & done_keys)
    elapsed = time.time() - s["started"]
    left = (len(s["keys"]) - done) * elapsed / max(1, done - s["done_at_start"])
    return f"{done}/{len(s['keys'])} runs done, {elapsed:.0f} s elapsed, about {left:.0f} s left"
