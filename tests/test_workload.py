"""Tests for sim.workload: bundled Azure traces, trace options, synthetic loads, errors."""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from sim.workload import Workload, WorkloadError, build_workload

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "workload"
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"


def conv(**overrides) -> dict:
    cfg = {"name": "azure_conv", "kind": "trace", "format": "azure2023", "path": None,
           "bundled": "azure_conv_2023", "rate_scale": 1.0,
           "window": {"start_s": 0.0, "duration_s": None}, "max_requests": None}
    return {**cfg, **overrides}


def synth(kind: str = "poisson", **overrides) -> dict:
    cfg = {"name": kind, "kind": kind, "rate": 5.0, "rate_scale": 1.0, "duration_s": 600.0,
           "num_requests": None,
           "lengths": {"prompt": {"dist": "lognormal", "mean": 1000, "sigma": 0.8, "min": 1, "max": 8192},
                       "output": {"dist": "fixed", "value": 200}}}
    if kind == "gamma":
        cfg["cv"] = 2.0
    return {**cfg, **overrides}


def cv_of(arrival: np.ndarray) -> float:
    gaps = np.diff(arrival)
    return float(gaps.std() / gaps.mean())


def raw_conv_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent reader of the bundled file: numpy datetime64[ns], no pandas, no sim code."""
    data = (resources.files("sim") / "data" / "azure_conv_2023.csv.gz").read_bytes()
    lines = gzip.decompress(data).decode().splitlines()
    assert lines[0] == HEADER
    fields = [line.split(",") for line in lines[1:]]
    stamps = np.array([f[0] for f in fields], dtype="datetime64[ns]").astype(np.int64)
    return ((stamps - stamps[0]) / 1e9, np.array([int(f[1]) for f in fields]),
            np.array([int(f[2]) for f in fields]))


# --------------------------------------------------------------------------- bundled traces

def test_conv_trace_matches_published_figures():
    w = build_workload(conv(), seed=0)
    assert len(w) == 19_366
    assert w.duration_s == pytest.approx(3501.721937, abs=1e-6)          # ~58 min
    assert w.prompt_tokens.mean() == pytest.approx(1154.697, abs=1e-3)
    assert w.output_tokens.mean() == pytest.approx(211.126, abs=1e-3)
    assert w.arrival_s.dtype == np.float64 and w.prompt_tokens.dtype == np.int64
    assert w.output_tokens.dtype == np.int64
    assert w.arrival_s[0] == 0.0 and np.all(np.diff(w.arrival_s) >= 0)
    # 18:15:50.9951690 - 18:15:46.6805900: the 100 ns digit survives parsing
    assert w.arrival_s[1] == pytest.approx(4.3145790, abs=1e-9)
    assert "CC-BY-4.0" in w.source and "Azure" in w.source
    assert (w.prompt_tokens[0], w.output_tokens[0]) == (374, 44)


def test_code_trace_matches_published_figures():
    w = build_workload(conv(name="azure_code", bundled="azure_code_2023"), seed=0)
    assert len(w) == 8_819
    assert w.duration_s == pytest.approx(3435.948056, abs=1e-6)
    assert w.prompt_tokens.mean() == pytest.approx(2047.848, abs=1e-3)
    assert w.output_tokens.mean() == pytest.approx(27.883, abs=1e-3)
    assert cv_of(w.arrival_s) > 10                                       # very bursty


def test_bundled_traces_have_no_zero_tokens():
    for name in ("azure_conv_2023", "azure_code_2023"):
        w = build_workload(conv(bundled=name), seed=0)
        assert w.prompt_tokens.min() >= 2 and w.output_tokens.min() >= 6
        assert "clamped" not in w.source and "re-sorted" not in w.source


def test_trace_ignores_seed():
    a, b = build_workload(conv(), seed=1), build_workload(conv(), seed=2)
    assert np.array_equal(a.arrival_s, b.arrival_s)


@pytest.mark.parametrize("scale", [2.0, 0.5, 4.0])
def test_rate_scale_divides_arrival_times_exactly(scale):
    base = build_workload(conv(), seed=0)
    scaled = build_workload(conv(rate_scale=scale), seed=0)
    assert np.array_equal(scaled.arrival_s, base.arrival_s / scale)
    assert scaled.duration_s == base.duration_s / scale
    assert np.array_equal(scaled.prompt_tokens, base.prompt_tokens)
    assert f"rate x{scale:g}" in scaled.source


def test_window_selects_rows_in_original_time_and_shifts_to_zero():
    raw_t, raw_p, raw_o = raw_conv_rows()
    w = build_workload(conv(window={"start_s": 600.0, "duration_s": 300.0}, rate_scale=2.0), seed=0)
    sel = (raw_t >= 600.0) & (raw_t < 900.0)
    assert 1000 < len(w) == sel.sum()
    assert np.array_equal(w.prompt_tokens, raw_p[sel]) and np.array_equal(w.output_tokens, raw_o[sel])
    np.testing.assert_allclose(w.arrival_s, (raw_t[sel] - raw_t[sel][0]) / 2.0, atol=1e-9)
    assert "window 600-900 s" in w.source


def test_window_open_end_and_max_requests():
    raw_t, raw_p, _ = raw_conv_rows()
    w = build_workload(conv(window={"start_s": 3000.0, "duration_s": None}), seed=0)
    assert len(w) == (raw_t >= 3000.0).sum()
    first = build_workload(conv(window={"start_s": 100.0}, max_requests=50), seed=0)
    assert len(first) == 50
    assert np.array_equal(first.prompt_tokens, raw_p[raw_t >= 100.0][:50])
    assert "first 50 requests" in first.source


def test_window_outside_trace_says_window_and_span():
    with pytest.raises(WorkloadError) as e:
        build_workload(conv(window={"start_s": 5000.0, "duration_s": 60.0}), seed=0)
    assert "5000" in str(e.value) and "3501.722" in str(e.value)


def test_dictconfig_and_plain_dict_agree():
    plain = build_workload(synth("gamma"), seed=3)
    dc = build_workload(OmegaConf.create(synth("gamma")), seed=3)
    assert np.array_equal(plain.arrival_s, dc.arrival_s)
    assert np.array_equal(plain.prompt_tokens, dc.prompt_tokens)


@pytest.mark.parametrize("name", ["azure_conv", "azure_code", "poisson", "gamma", "onoff", "azure_code_fitted",
                                  "mooncake_conversation", "mooncake_synthetic", "sharegpt_8k", "arxiv_summarization"])
def test_config_files_build(name):
    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    w = build_workload(cfg, seed=0)
    assert w.name == name and len(w) > 100
    assert w.arrival_s[0] == 0.0 and w.prompt_tokens.min() >= 1 and w.output_tokens.min() >= 1


def test_hydra_composes_the_group_with_overrides():
    from hydra import compose, initialize_config_dir
    with initialize_config_dir(config_dir=str(CONFIGS.parent), version_base=None):
        cfg = compose(overrides=["+workload=azure_conv", "workload.rate_scale=2",
                                 "workload.window.duration_s=600"])
    w = build_workload(cfg.workload, seed=0)
    assert w.duration_s <= 300.0 and "window 0-600 s" in w.source and "rate x2" in w.source


# --------------------------------------------------------------------------- synthetic

@pytest.mark.parametrize("kind", ["poisson", "gamma"])
def test_synthetic_is_deterministic_per_seed(kind):
    cfg = synth(kind, lengths={"prompt": {"dist": "uniform", "low": 10, "high": 20},
                               "output": {"dist": "lognormal", "mean": 100, "sigma": 1.0}})
    a, b, c = (build_workload(cfg, seed=s) for s in (7, 7, 8))
    for field in ("arrival_s", "prompt_tokens", "output_tokens"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.arrival_s[:50], c.arrival_s[:50])
    assert not np.array_equal(a.output_tokens[:50], c.output_tokens[:50])


def test_poisson_rate_and_cv():
    w = build_workload(synth(rate=4.0, rate_scale=2.5, duration_s=10_000.0), seed=0)
    assert len(w) / 10_000.0 == pytest.approx(10.0, rel=0.015)    # sd of the count is 0.3 %
    assert w.arrival_s[-1] < 10_000.0
    assert cv_of(w.arrival_s) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("cv", [0.5, 3.0])
def test_gamma_cv_and_rate(cv):
    w = build_workload(synth("gamma", cv=cv, rate=2.0, num_requests=200_000), seed=0)
    assert len(w) == 200_000
    assert cv_of(w.arrival_s) == pytest.approx(cv, rel=0.05)
    assert (len(w) - 1) / w.duration_s == pytest.approx(2.0, rel=0.03)


def test_num_requests_overrides_duration():
    w = build_workload(synth(num_requests=1, duration_s=None), seed=0)
    assert len(w) == 1 and w.duration_s == 0.0


def test_length_distributions():
    n = 100_000
    lengths = {"prompt": {"dist": "uniform", "low": 3, "high": 7},
               "output": {"dist": "lognormal", "mean": 300, "sigma": 0.5}}
    w = build_workload(synth(num_requests=n, lengths=lengths), seed=0)
    assert set(np.unique(w.prompt_tokens)) == {3, 4, 5, 6, 7}            # inclusive bounds
    assert w.output_tokens.mean() == pytest.approx(300, rel=0.02)         # arithmetic mean
    capped = {"prompt": {"dist": "lognormal", "mean": 1000, "sigma": 2.0, "min": 16, "max": 4096},
              "output": {"dist": "fixed", "value": 5}}
    w = build_workload(synth(num_requests=n, lengths=capped), seed=0)
    assert w.prompt_tokens.min() == 16 and w.prompt_tokens.max() == 4096
    assert np.all(w.output_tokens == 5)


def test_empirical_column_draws_trace_values():
    raw_t, raw_p, raw_o = raw_conv_rows()
    lengths = {"prompt": {"dist": "empirical", "trace": "azure_conv_2023", "column": "prompt"},
               "output": {"dist": "empirical", "trace": "azure_conv_2023", "column": "output"}}
    w = build_workload(synth(num_requests=20_000, lengths=lengths), seed=0)
    assert set(w.prompt_tokens) <= set(raw_p) and set(w.output_tokens) <= set(raw_o)
    assert w.prompt_tokens.mean() == pytest.approx(raw_p.mean(), rel=0.05)


def test_empirical_joint_keeps_pairs():
    _, raw_p, raw_o = raw_conv_rows()
    pairs = set(zip(raw_p.tolist(), raw_o.tolist()))
    joint = build_workload(synth(num_requests=5000,
                                 lengths={"dist": "empirical_joint", "trace": "azure_conv_2023"}), seed=0)
    assert all(p in pairs for p in zip(joint.prompt_tokens.tolist(), joint.output_tokens.tolist()))
    # Independent marginals would mostly produce pairs absent from the trace: the check can fail.
    lengths = {"prompt": {"dist": "empirical", "trace": "azure_conv_2023", "column": "prompt"},
               "output": {"dist": "empirical", "trace": "azure_conv_2023", "column": "output"}}
    indep = build_workload(synth(num_requests=5000, lengths=lengths), seed=0)
    hits = np.mean([p in pairs for p in zip(indep.prompt_tokens.tolist(), indep.output_tokens.tolist())])
    assert hits < 0.5


@pytest.mark.parametrize("cfg, key", [
    (conv(rate_scale=0), "rate_scale"),
    (synth(rate_scale=-1.0), "rate_scale"),
    (synth(rate=0), "rate"),
    (synth("gamma", cv=0), "cv"),
    (synth(duration_s=0), "duration_s"),
    (synth(duration_s=None), "duration_s"),
    (synth(num_requests=0), "num_requests"),
    (synth(rate="fast"), "rate"),
    (synth(kind="weibull"), "kind"),
    (synth(cv=2.0), "cv"),                                            # cv is for gamma only
    (synth(lengths={"prompt": {"dist": "fixed", "value": 0}, "output": {"dist": "fixed", "value": 1}}),
     "value"),
    (synth(lengths={"prompt": {"dist": "uniform", "low": 9, "high": 3},
                    "output": {"dist": "fixed", "value": 1}}), "high"),
    (synth(lengths={"prompt": {"dist": "lognormal", "mean": 100, "sigma": 1, "min": 0},
                    "output": {"dist": "fixed", "value": 1}}), "min"),
    (synth(lengths={"prompt": {"dist": "zipf"}, "output": {"dist": "fixed", "value": 1}}), "dist"),
    (synth(lengths={"prompt": {"dist": "empirical", "trace": "azure_conv_2023", "column": "both"},
                    "output": {"dist": "fixed", "value": 1}}), "column"),
    (synth(lengths=None), "lengths"),
    (conv(window={"start_s": 0, "duration_s": 0}), "duration_s"),
    (conv(window={"start_s": -5}), "start_s"),
    (conv(max_requests=0), "max_requests"),
    (conv(bundled="azure_2099"), "azure_2099"),
    (conv(format="burstgpt"), "burstgpt"),
    (conv(rate_scal=2), "rate_scal"),                                 # typo caught, not ignored
    (conv(path="/nonexistent/trace.csv"), "trace.csv"),
])
def test_invalid_config_names_the_key(cfg, key):
    with pytest.raises(WorkloadError, match=key):
        build_workload(cfg, seed=0)


# --------------------------------------------------------------------------- trace files

GOOD = ["2023-11-16 18:15:46.6805900,374,44", "2023-11-16 18:15:50.9951690,396,109",
        "2023-11-16 18:15:51.0000000,10,20"]


def write(tmp_path: Path, lines: list[str], name: str = "trace.csv", newline: str = "\n") -> Path:
    path = tmp_path / name
    path.write_bytes(newline.join(lines).encode())
    return path


def load(path: Path, **overrides) -> Workload:
    return build_workload(conv(path=str(path), **overrides), seed=0)


def test_user_file_plain_and_gzipped(tmp_path):
    plain = load(write(tmp_path, [HEADER, *GOOD], newline="\r\n"))
    np.testing.assert_allclose(plain.arrival_s, [0.0, 4.314579, 4.31941])
    assert list(plain.prompt_tokens) == [374, 396, 10] and "trace.csv" in plain.source
    gz = tmp_path / "trace.csv.gz"
    gz.write_bytes(gzip.compress("\n".join([HEADER, *GOOD]).encode()))
    assert np.array_equal(load(gz).arrival_s, plain.arrival_s)


def test_unsorted_rows_are_sorted_stably(tmp_path):
    rows = [GOOD[1], GOOD[0], "2023-11-16 18:15:50.9951690,1,2"]       # ties keep file order
    w = load(write(tmp_path, [HEADER, *rows]))
    assert list(w.prompt_tokens) == [374, 396, 1] and w.arrival_s[0] == 0.0
    assert "re-sorted" in w.source


def test_many_ties_keep_file_order(tmp_path):
    rows = [f"2023-11-16 18:15:0{i % 3}.5,{i + 1},1" for i in range(200)]   # long enough for unstable sorts to show
    w = load(write(tmp_path, [HEADER, *rows]))
    seconds = np.rint(w.arrival_s).astype(int)
    expected = np.concatenate([np.arange(r, 200, 3) + 1 for r in range(3)])
    assert np.array_equal(w.prompt_tokens, expected) and list(np.bincount(seconds)) == [67, 67, 66]


def test_window_is_half_open(tmp_path):
    rows = [f"2023-11-16 00:00:0{i}.0,{i + 1},1" for i in range(5)]
    w = load(write(tmp_path, [HEADER, *rows]), window={"start_s": 1.0, "duration_s": 2.0})
    assert list(w.prompt_tokens) == [2, 3] and list(w.arrival_s) == [0.0, 1.0]


def test_zero_token_counts_are_clamped_and_counted(tmp_path):
    w = load(write(tmp_path, [HEADER, "2023-11-16 18:15:46.0,0,44", "2023-11-16 18:15:47.0,5,0",
                              "2023-11-16 18:15:48.0,5,7"]))
    assert len(w) == 3 and list(w.prompt_tokens) == [1, 5, 5] and list(w.output_tokens) == [44, 1, 7]
    assert "2 zero token counts clamped to 1" in w.source


def _filler(n: int) -> list[str]:
    return [f"2023-11-16 18:{i // 60:02d}:{i % 60:02d}.1234567,{100 + i},{10 + i}" for i in range(n)]


@pytest.mark.parametrize("bad, field", [
    ("2023-11-16 18:59:00.0,abc,5", "ContextTokens"),
    ("2023-11-16 18:59:00.0,12.5,5", "ContextTokens"),
    ("2023-11-16 18:59:00.0,,5", "ContextTokens"),
    ("2023-11-16 18:59:00.0,12,-3", "GeneratedTokens"),
    ("2023-11-16 18:59:00.0,12,x7", "GeneratedTokens"),
    ("2023-11-16 18:59:00.0,12", "GeneratedTokens"),                   # missing field
    ("2023-11-16 18:59:00.0,12,5,9", "GeneratedTokens"),               # extra field
    ("yesterday,12,5", "TIMESTAMP"),
    ("2023-13-45 18:59:00.0,12,5", "TIMESTAMP"),
    (",12,5", "TIMESTAMP"),
])
def test_malformed_line_names_file_line_and_field(tmp_path, bad, field):
    lines = [HEADER, *_filler(15), bad, *_filler(5)]                  # bad row is line 17
    path = write(tmp_path, lines, name="AzureLLMInferenceTrace_conv.csv")
    with pytest.raises(WorkloadError) as e:
        load(path)
    msg = str(e.value)
    assert "AzureLLMInferenceTrace_conv.csv line 17:" in msg and f"'{field}'" in msg, msg


def test_line_numbers_count_blank_lines_and_gzip(tmp_path):
    lines = [HEADER, GOOD[0], "", GOOD[1], "2023-11-16 18:15:52.0,7,oops"]  # bad row is line 5
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress("\n".join(lines).encode()))
    with pytest.raises(WorkloadError, match=r"t\.csv\.gz line 5: field 'GeneratedTokens' is 'oops'"):
        load(gz)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(WorkloadError, match=r"empty\.csv line 1: file is empty.*TIMESTAMP"):
        load(path)


def test_missing_header(tmp_path):
    with pytest.raises(WorkloadError) as e:
        load(write(tmp_path, GOOD, name="noheader.csv"))
    msg = str(e.value)
    assert "noheader.csv line 1:" in msg and "'TIMESTAMP'" in msg and "header" in msg


def test_header_with_misspelt_column(tmp_path):
    with pytest.raises(WorkloadError, match=r"h\.csv line 1: header lacks field\(s\) 'GeneratedTokens'"):
        load(write(tmp_path, ["TIMESTAMP,ContextTokens,GenTokens", *GOOD], name="h.csv"))


def test_header_only(tmp_path):
    with pytest.raises(WorkloadError, match=r"only\.csv line 1: header only"):
        load(write(tmp_path, [HEADER, ""], name="only.csv"))


def test_binary_garbage(tmp_path):
    path = tmp_path / "junk.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(WorkloadError, match="junk.csv.gz"):
        load(path)


# --------------------------------------------------------------------------- Workload record

def test_workload_record_contract():
    w = Workload("x", np.array([0.0]), np.array([3]), np.array([4]), "test")
    assert len(w) == 1 and w.duration_s == 0.0
    with pytest.raises(ValueError):
        w.arrival_s[0] = 1.0                                             # read-only arrays
    with pytest.raises(WorkloadError):
        Workload("x", np.array([1.0, 2.0]), np.array([3, 3]), np.array([4, 4]), "not shifted")
    with pytest.raises(WorkloadError):
        Workload("x", np.array([0.0, 2.0]), np.array([3, 0]), np.array([4, 4]), "zero prompt")
    with pytest.raises(WorkloadError):
        Workload("x", np.array([0.0, np.nan, 3.0]), np.ones(3), np.ones(3), "nan arrival")
