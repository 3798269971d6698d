"""Plots of a run or a comparison: latency CDFs, utilisation over time and its histogram."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sim.metrics import pool_utilisation_series  # noqa: E402
from sim.samples import Distribution  # noqa: E402


CDF_POINTS = 2000  # quantiles drawn per curve: enough for the eye, cheap for millions of samples


def _cdf(ax, samples: Distribution, label: str) -> None:
    if samples.total:
        fractions = np.linspace(0, 1, CDF_POINTS)
        ax.plot(samples.quantiles(fractions) * 1e3, fractions, label=label)


def latency_cdfs(requests: dict[str, pd.DataFrame], itl: dict[str, Distribution], out_dir: Path) -> list[Path]:
    paths = []
    ttft = {k: Distribution.of(v["ttft_s"].dropna().to_numpy(dtype=float)) for k, v in requests.items()}
    for name, title, data in (("ttft_cdf.png", "Time to first token", ttft),
                              ("itl_cdf.png", "Inter-token latency (every gap)", itl)):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, samples in data.items():
            _cdf(ax, samples, label)
        ax.set_xscale("log")
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("fraction of samples")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = out_dir / name
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def utilisation_over_time(utilisation: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """One figure per run: compute and memory-bandwidth utilisation per pool over time,
    and a histogram of the per-bin values (bimodal when a pool swings between busy and idle)."""
    paths = []
    for run, table in utilisation.items():
        series = pool_utilisation_series(table)
        roles = list(dict.fromkeys(series["role"]))
        fig, axes = plt.subplots(len(roles), 2, figsize=(11, 3.2 * len(roles)), squeeze=False,
                                 gridspec_kw={"width_ratios": [3, 1]})
        for row, role in enumerate(roles):
            pool = series[series["role"] == role]
            ax, hist = axes[row]
            for column, label in (("compute_util", "compute"), ("memory_util", "memory bandwidth")):
                ax.plot(pool["bin_start_s"], pool[column] * 100, label=label, linewidth=0.8)
                hist.hist(pool[column] * 100, bins=40, range=(0, 100), alpha=0.6, label=label)
            ax.set_title(f"{run}: {role} pool")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("utilisation (%)")
            ax.set_ylim(0, 100)
            ax.legend(loc="upper right")
            hist.set_xlabel("utilisation (%)")
            hist.set_ylabel("time bins")
            hist.set_title("distribution over time")
        fig.tight_layout()
        path = out_dir / f"utilisation_{run}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
