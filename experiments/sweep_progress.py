"""Progress of a Hydra multirun sweep: runs done out of the sweep's total, and time left.

`SweepProgress` is a Hydra callback: at the start of the multirun it counts the jobs the
sweep overrides expand to and records the count and the start time next to the results
table; each job then reports, from the table, how many runs are done and an estimate of the
time left (from the runs done since this start, so a resumed sweep estimates from its own pace).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from experiments import results_table


def count_jobs(overrides: list[str]) -> int:
    """Jobs a multirun expands `overrides` (command line and hydra.sweeper.params) to."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return math.prod(len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1 for o in parsed)


def _state_file(table: str | Path) -> Path:
    return Path(table).with_name(Path(table).name + ".progress.json")


class SweepProgress(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params else {}
        overrides = list(config.hydra.overrides.task) + [f"{k}={v}" for k, v in params.items()]
        state = _state_file(config.sweep.table)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps({"total": count_jobs(overrides), "started": time.time(),
                                     "done_at_start": len(results_table.done_keys(Path(config.sweep.table)))}))


def report(table: str | Path, done: int) -> str:
    """'k/N runs done, elapsed, about T left' (N unknown when not launched as a multirun)."""
    state = _state_file(table)
    if not state.exists():
        return f"{done} runs done"
    s = json.loads(state.read_text())
    elapsed = time.time() - s["started"]
    pace = elapsed / max(1, done - s["done_at_start"])
    left = max(0, s["total"] - done) * pace
    return f"{done}/{s['total']} runs done, {elapsed:.0f} s elapsed, about {left:.0f} s left"
