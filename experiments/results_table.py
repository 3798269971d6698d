"""One tidy results table per sweep: a CSV with one row per (run, architecture), config columns
then metric columns, that many processes append to and a restarted sweep reads to skip the
runs it already has.

Appending rewrites the file under an exclusive lock (fcntl), so concurrent jobs of a joblib
or Ray sweep on one file system never interleave rows, and a run killed mid-sweep leaves
only whole rows behind. Tables are small (one row per run), so rewriting costs nothing.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

KEY = "run_key"   # identifies a run by its overrides; a row with this key means "done"


def run_overrides(overrides: list[str]) -> list[str]:
    """The overrides that make a run what it is (not where its results go: sweep.*, hydra.*)."""
    return [o for o in overrides if not o.lstrip("+~").startswith(("sweep.", "hydra"))]


def run_key(overrides: list[str]) -> str:
    """The same runs give the same key whatever the order of their overrides."""
    return " ".join(sorted(run_overrides(overrides)))


@contextmanager
def _locked(table: Path) -> Iterator[None]:
    table.parent.mkdir(parents=True, exist_ok=True)
    with open(table.with_name(table.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read(table: Path) -> pd.DataFrame:
    return pd.read_csv(table) if table.exists() else pd.DataFrame(columns=[KEY])


def done_keys(table: Path) -> set[str]:
    with _locked(table):
        return set(read(table)[KEY].astype(str))


def append(table: Path, rows: list[dict[str, Any]]) -> int:
    """Add `rows` (each with a run_key) to `table`; returns the number of runs now in it."""
    with _locked(table):
        frame = pd.concat([read(table), pd.DataFrame(rows)], ignore_index=True)
        partial = table.with_name(table.name + ".partial")
        frame.to_csv(partial, index=False)
        os.replace(partial, table)   # atomic: readers see the old or the new table, never half
        return frame[KEY].nunique()
