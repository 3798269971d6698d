"""`python -m sim.describe`: the numbers it prints, checked against brute force, and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.describe import describe, format_description, plot_description, prefix_reuse_share
from sim.traces import load_trace
from sim.workload import Workload

ROOT = Path(__file__).resolve().parents[1]


def test_prefix_reuse_matches_brute_force():
    w = load_trace("mooncake_synthetic")
    seen, reused, total = set(), 0, 0
    for i in range(len(w)):
        blocks = w.blocks_of(i).tolist()
        reused += sum(b in seen for b in blocks)
        total += len(blocks)
        seen.update(blocks)
    assert prefix_reuse_share(w) == pytest.approx(reused / total, abs=1e-12)
    assert prefix_reuse_share(load_trace("mooncake_conversation")) == pytest.approx(0.366, abs=0.001)  # "37%"
    assert prefix_reuse_share(load_trace("azure_code_2023")) is None


def test_describe_azure_code():
    d = describe(load_trace("azure_code_2023"))
    assert d.requests == 8_819 and d.span_s == pytest.approx(3435.948, abs=1e-3)
    assert d.mean_per_min == pytest.approx(60 * 8_818 / 3435.948, rel=1e-6)     # 2.57 req/s
    assert d.interarrival_cv == pytest.approx(13.15, abs=0.01)                 # "CV ~ 13"
    assert d.prompt.mean == pytest.approx(2047.848, abs=1e-3) and d.prompt.max == 7437
    text = format_description(d)
    assert "requests            8,819" in text and "prefix reuse        n/a" in text


def test_peak_per_minute_is_a_sliding_window():
    arrival = np.array([0.0, 10.0, 50.0, 59.9, 61.0, 62.0, 200.0])
    d = describe(Workload("p", arrival, np.ones(7), np.ones(7), "t"))
    assert d.peak_per_min == 5 and d.peak_at_s == 10.0   # [10, 70) holds 5; bins of [0, 60) only 4


def test_plot_is_written(tmp_path):
    w = load_trace("mooncake_synthetic")
    path = plot_description(w, describe(w), tmp_path / "d.png")
    assert path.stat().st_size > 10_000


def test_cli_prints_the_description_and_saves_the_plot(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sim.describe", "workload=mooncake_conversation",
                          "workload.window.duration_s=600", f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "workload mooncake_conversation: Mooncake FAST'25 conversation trace" in out.stdout
    assert "prefix reuse" in out.stdout and "% of prompt blocks" in out.stdout
    assert (tmp_path / "describe_mooncake_conversation.png").exists()
    bad = subprocess.run([sys.executable, "-m", "sim.describe", "workload=burstgpt", f"hydra.run.dir={tmp_path}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "workload.path is null: set it to your burstgpt file" in bad.stderr
