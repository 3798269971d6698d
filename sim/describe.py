"""`python -m sim.describe workload=NAME [workload.KEY=VALUE ...]`: look at a load before simulating it.

Builds the workload exactly as `python -m sim` would (same config group, same seed, same
shaping), prints its request count, span, mean and peak rate per minute, inter-arrival CV,
prompt/output length percentiles and prefix-reuse share, and saves `describe_<name>.png`
(requests per minute over time, prompt and output length distributions) in Hydra's run
directory (`hydra.run.dir=DIR` to choose it; `output.plots=false` to skip the plot).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.workload_record import Workload

PERCENTILES = (50, 90, 99)
PEAK_WINDOW_S = 60.0


@dataclass(frozen=True)
class LengthStats:
    mean: float
    percentiles: dict[int, float]   # PERCENTILES -> tokens
    max: int

    @classmethod
    def of(cls, tokens: np.ndarray) -> LengthStats:
        return cls(float(tokens.mean()), dict(zip(PERCENTILES, np.percentile(tokens, PERCENTILES).tolist())),
                   int(tokens.max()))


@dataclass(frozen=True)
class Description:
    """What a capacity planner wants to know about a load; nan where it is undefined."""

    name: str
    source: str
    requests: int
    span_s: float
    mean_per_min: float            # (n - 1) / span: the rate a renewal fit would use
    peak_per_min: float            # most arrivals in any 60 s window (sliding, not binned)
    peak_at_s: float               # where that window starts
    interarrival_cv: float
    prompt: LengthStats
    output: LengthStats
    prefix_reuse: float | None     # share of prompt blocks seen in an earlier request; None: no hashes


def prefix_reuse_share(w: Workload) -> float | None:
    """Share of all prompt-prefix blocks whose hash appeared in an earlier request (None without
    hashes). An upper bound on prefix-cache hits: an infinite cache, every request routed alike."""
    if not w.has_prefix_blocks or len(w.prefix_block_hashes) == 0:
        return None
    owner = np.repeat(np.arange(len(w)), w.block_counts())       # request of each block
    _, block_id = np.unique(w.prefix_block_hashes, return_inverse=True)
    first = np.full(block_id.max() + 1, len(w))
    np.minimum.at(first, block_id, owner)                         # first request holding each hash
    return float((first[block_id] < owner).mean())


def describe(w: Workload) -> Description:
    a = w.arrival_s
    gaps = np.diff(a)
    in_window = np.searchsorted(a, a + PEAK_WINDOW_S, side="left") - np.arange(len(a))
    peak = int(np.argmax(in_window))
    span = w.duration_s
    return Description(
        name=w.name, source=w.source, requests=len(w), span_s=span,
        mean_per_min=60.0 * (len(w) - 1) / span if span > 0 else math.nan,
        peak_per_min=float(in_window[peak]) * 60.0 / PEAK_WINDOW_S, peak_at_s=float(a[peak]),
        interarrival_cv=float(gaps.std() / gaps.mean()) if len(gaps) > 1 and gaps.mean() > 0 else math.nan,
        prompt=LengthStats.of(w.prompt_tokens), output=LengthStats.of(w.output_tokens),
        prefix_reuse=prefix_reuse_share(w))


def format_description(d: Description) -> str:
    def lengths(s: LengthStats) -> str:
        pcts = "  ".join(f"p{p} {v:,.0f}" for p, v in s.percentiles.items())
        return f"mean {s.mean:,.0f}  {pcts}  max {s.max:,}"
    reuse = "n/a (no prefix hashes)" if d.prefix_reuse is None else f"{d.prefix_reuse:.1%} of prompt blocks"
    return "\n".join([
        f"workload {d.name}: {d.source}",
        f"  requests            {d.requests:,}",
        f"  span                {d.span_s:,.1f} s ({d.span_s / 60:.1f} min)",
        f"  rate per minute     mean {d.mean_per_min:,.1f}, peak {d.peak_per_min:,.0f} "
        f"(60 s from {d.peak_at_s:,.0f} s)",
        f"  inter-arrival CV    {d.interarrival_cv:.2f}",
        f"  prompt tokens       {lengths(d.prompt)}",
        f"  output tokens       {lengths(d.output)}",
        f"  prefix reuse        {reuse}",
    ])


def plot_description(w: Workload, d: Description, path: Path) -> Path:
    """Three panels: requests per minute over time, prompt and output length histograms."""
    import matplotlib
    matplotlib.use("Agg")   # files only
    import matplotlib.pyplot as plt

    fig, (rate, prompt, output) = plt.subplots(1, 3, figsize=(15, 4))
    bin_s = 60.0 if d.span_s >= 600 else 10.0      # short loads: finer bins, still per-minute units
    edges = np.arange(0.0, w.arrival_s[-1] + bin_s, bin_s)
    counts, _ = np.histogram(w.arrival_s, bins=edges)
    rate.step(edges[:-1] / 60, counts * 60.0 / bin_s, where="post")
    rate.set_ylim(bottom=0)
    rate.set_xlabel("time (min)")
    rate.set_ylabel(f"requests per minute ({bin_s:g} s bins)")
    rate.set_title(f"{d.name}: {d.requests:,} requests, CV {d.interarrival_cv:.2f}")
    for ax, tokens, label in ((prompt, w.prompt_tokens, "prompt"), (output, w.output_tokens, "output")):
        ax.hist(tokens, bins=np.geomspace(tokens.min(), tokens.max() + 1, 60))
        ax.set_xscale("log")
        ax.set_xlabel(f"{label} tokens (log scale)")
        ax.set_ylabel("requests")
        ax.set_title(f"{label} lengths, median {np.median(tokens):,.0f}")
    for ax in (rate, prompt, output):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from sim.workload import WorkloadError, build_workload

    @hydra.main(version_base=None, config_path="../configs", config_name="config")
    def main(cfg: DictConfig) -> None:
        try:
            w = build_workload(cfg.workload, int(cfg.seed))
        except WorkloadError as error:
            raise SystemExit(f"error: {error}") from None
        d = describe(w)
        print(format_description(d))
        if cfg.output.plots:
            path = Path(HydraConfig.get().runtime.output_dir) / f"describe_{w.name}.png"
            print(f"  plot                {plot_description(w, d, path)}")

    main()


if __name__ == "__main__":
    _main()
