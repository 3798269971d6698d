"""Request workloads: when each request arrives and how long its prompt and output are.

`build_workload(cfg, seed)` turns the Hydra `workload` config group into a `Workload`,
either by replaying a trace (the Azure LLM inference traces 2023 are bundled in
`sim/data/`) or by drawing synthetic Poisson / gamma arrivals with configurable lengths.

Every problem a user can cause (bad config value, missing or malformed trace file) raises
`WorkloadError` with a message that says what to change; for files it names the file,
the 1-based line (the header is line 1) and the field.

Zero token counts in a trace are clamped to 1 (and counted in `Workload.source`) rather
than dropped: dropping would thin the arrival process being replayed, and a served
request always runs a prefill and emits at least one token. The bundled 2023 traces
have none (minimum prompt 2, minimum output 6).
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf


class WorkloadError(ValueError):
    """A workload config or trace file the user has to fix; the message says how."""


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival; the first arrives at 0.0 s. Arrays are read-only."""

    name: str
    arrival_s: np.ndarray      # float64, ascending, arrival_s[0] == 0.0
    prompt_tokens: np.ndarray  # int64, >= 1
    output_tokens: np.ndarray  # int64, >= 1
    source: str                # where the requests come from, with attribution

    def __post_init__(self) -> None:
        arrays = {"arrival_s": np.float64, "prompt_tokens": np.int64, "output_tokens": np.int64}
        for field, dtype in arrays.items():
            a = np.array(getattr(self, field), dtype=dtype)   # private copy, then freeze
            a.setflags(write=False)
            object.__setattr__(self, field, a)
        n = len(self.arrival_s)
        if n == 0 or len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise WorkloadError(f"workload '{self.name}': needs >= 1 request and equal-length arrays")
        if self.arrival_s[0] != 0.0 or not np.all(np.diff(self.arrival_s) >= 0):  # also rejects NaN
            raise WorkloadError(f"workload '{self.name}': arrivals must be ascending from 0.0")
        if self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1:
            raise WorkloadError(f"workload '{self.name}': token counts must be >= 1")

    @property
    def duration_s(self) -> float:
        """Last arrival minus first arrival (0.0 for fewer than two requests)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    def __len__(self) -> int:
        return len(self.arrival_s)


# --------------------------------------------------------------------------- traces

class Trace(NamedTuple):
    """A parsed trace: arrivals (ascending) in seconds since its earliest timestamp."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    label: str          # human description incl. attribution
    notes: tuple[str, ...]  # what the loader changed (clamping, sorting)


_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TIMESTAMP_EXAMPLE = "2023-11-16 18:15:46.6805900"
_UINT = re.compile(r"\s*\d+\s*")

# name -> (file in sim/data, format, label); the label travels into Workload.source.
BUNDLED: dict[str, tuple[str, str, str]] = {
    "azure_conv_2023": ("azure_conv_2023.csv.gz", "azure2023",
                        "Azure LLM inference trace 2023 (conv), Azure/AzurePublicDataset, CC-BY-4.0"),
    "azure_code_2023": ("azure_code_2023.csv.gz", "azure2023",
                        "Azure LLM inference trace 2023 (code), Azure/AzurePublicDataset, CC-BY-4.0"),
}


def _read_text(data: bytes, name: str) -> str:
    """Decode a possibly gzip-compressed UTF-8 file (detected by magic bytes, not suffix)."""
    try:
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return data.decode("utf-8-sig")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise WorkloadError(f"{name}: cannot read as (gzipped) UTF-8 CSV text: {e}") from e


def _locate_azure_error(text: str, name: str) -> WorkloadError | None:
    """Scan line by line for the first problem the fast parser tripped on; None if none."""
    reader = csv.reader(io.StringIO(text))
    # reader.line_num is the physical line just read, so numbers match a text editor's.
    rows = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]  # skip blank lines
    expected = ",".join(_AZURE_COLUMNS)
    if not rows:
        return WorkloadError(f"{name} line 1: file is empty, expected the header '{expected}'")
    (num, header), data = rows[0], rows[1:]
    header = [h.strip() for h in header]
    missing = [c for c in _AZURE_COLUMNS if c not in header]
    if missing:
        return WorkloadError(f"{name} line {num}: header lacks field(s) {', '.join(map(repr, missing))}; "
                             f"expected the header '{expected}', found '{','.join(header)}'")
    if not data:
        return WorkloadError(f"{name} line {num}: header only, the file has no requests")
    col = {c: header.index(c) for c in _AZURE_COLUMNS}
    for num, row in data:
        if len(row) != len(header):
            what = (f"field '{header[len(row)]}' is missing" if len(row) < len(header)
                    else f"extra field(s) after '{header[-1]}'")
            return WorkloadError(f"{name} line {num}: {what}; found {len(row)} fields, expected "
                                 f"{len(header)} ({','.join(header)})")
        stamp = row[col["TIMESTAMP"]]
        try:
            bad = pd.isna(pd.to_datetime(stamp, format="ISO8601"))
        except (ValueError, OverflowError):
            bad = True
        if bad:
            return WorkloadError(f"{name} line {num}: field 'TIMESTAMP' is '{stamp}', "
                                 f"expected a timestamp like '{_TIMESTAMP_EXAMPLE}'")
        for field in _AZURE_COLUMNS[1:]:
            value = row[col[field]]
            if not _UINT.fullmatch(value):
                return WorkloadError(f"{name} line {num}: field '{field}' is '{value}', "
                                     "expected a non-negative integer")
    return None


def parse_azure2023(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Parse Azure 2023 CSV bytes into (arrival_s, context, generated, was_sorted).

    Arrivals are seconds since the earliest timestamp, with 100 ns precision kept (the
    timestamps go through int64 nanoseconds). Unsorted rows are sorted stably by time.
    Raises WorkloadError naming `name`, the line and the field of the first bad line.
    """
    text = _read_text(data, name)
    try:  # fast path: pandas does the whole file in C
        df = pd.read_csv(io.StringIO(text), dtype={"TIMESTAMP": str, "ContextTokens": np.int64,
                                                   "GeneratedTokens": np.int64},
                         keep_default_na=False, skipinitialspace=True)
        stamps = pd.to_datetime(df["TIMESTAMP"], format="ISO8601")
        ok = len(df) > 0 and not stamps.isna().any()
        ns = stamps.dt.as_unit("ns").to_numpy(np.int64)   # int64 ns keeps the 100 ns digits
        tokens = df[list(_AZURE_COLUMNS[1:])].to_numpy(np.int64)
        ok = ok and bool((tokens >= 0).all())
    except Exception as e:  # any failure: find the exact line below, keep pandas' words as last resort
        ok, reason = False, e
    else:
        reason = "invalid values"
    if not ok:
        raise _locate_azure_error(text, name) or WorkloadError(f"{name}: cannot parse: {reason}")
    order = np.argsort(ns, kind="stable")
    arrival_s = (ns[order] - ns[order[0]]) / 1e9
    return arrival_s, tokens[order, 0], tokens[order, 1], bool(np.all(order == np.arange(len(ns))))


_FORMATS: dict[str, Callable[[bytes, str], tuple[np.ndarray, np.ndarray, np.ndarray, bool]]] = {
    "azure2023": parse_azure2023,
}


def _resolve_path(path: str) -> Path:
    """User paths are relative to the directory the run was launched from (Hydra-aware)."""
    from hydra.utils import to_absolute_path  # lazy: only user files need it
    return Path(to_absolute_path(str(path)))


def load_trace(bundled: str | None = None, path: str | None = None, fmt: str | None = None) -> Trace:
    """Load a trace from a user `path` (wins if given) or a `bundled` name (see BUNDLED).

    Zero token counts are clamped to 1 and counted in `notes` (see the module docstring).
    The returned arrays are read-only: bundled traces are parsed once and shared.
    """
    if path is None:
        if bundled not in BUNDLED:
            raise WorkloadError(f"unknown bundled trace {bundled!r}; choose one of {sorted(BUNDLED)} "
                                "or give a file path")
        return _bundled_trace(bundled, fmt)
    p = _resolve_path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise WorkloadError(f"trace file '{p}' cannot be read ({e.strerror}); set the path to an "
                            "existing file, or workload.path to null to use the bundled trace") from e
    fmt = fmt or "azure2023"
    return _parse_trace(data, str(p), fmt, f"trace file {p} ({fmt} format)")


@functools.lru_cache(maxsize=None)
def _bundled_trace(bundled: str, fmt: str | None) -> Trace:
    file, bundled_fmt, label = BUNDLED[bundled]
    data = (resources.files("sim") / "data" / file).read_bytes()
    return _parse_trace(data, file, fmt or bundled_fmt, label)


def _parse_trace(data: bytes, name: str, fmt: str, label: str) -> Trace:
    if fmt not in _FORMATS:
        raise WorkloadError(f"unknown trace format {fmt!r}; supported: {sorted(_FORMATS)}")
    arrival, prompt, output, was_sorted = _FORMATS[fmt](data, name)
    notes = [] if was_sorted else ["rows re-sorted by timestamp"]
    zeros = int((prompt == 0).sum() + (output == 0).sum())
    if zeros:
        notes.append(f"{zeros} zero token counts clamped to 1")
    arrays = [arrival, np.maximum(prompt, 1), np.maximum(output, 1)]
    for a in arrays:
        a.setflags(write=False)
    return Trace(*arrays, label, tuple(notes))


# --------------------------------------------------------------------------- config access

def _plain(cfg: Any) -> Any:
    """DictConfig -> dict (resolving interpolations); plain mappings pass through."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def _check_keys(cfg: Any, allowed: set[str], where: str) -> None:
    if not isinstance(cfg, Mapping):
        raise WorkloadError(f"{where} must be a mapping of keys {sorted(allowed)}, got {cfg!r}")
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise WorkloadError(f"{where}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")


def _num(cfg: Mapping, key: str, where: str, *, default: Any = None, positive: bool = False,
         minimum: float | None = None, integer: bool = False, optional: bool = False) -> Any:
    """Read a number from cfg and validate it; the error names the dotted key to change."""
    value = cfg.get(key, default)
    if value is None:
        if optional:
            return None
        raise WorkloadError(f"{where}.{key} is missing; set it to a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WorkloadError(f"{where}.{key} = {value!r}; expected a finite number")
    if integer and value != int(value):
        raise WorkloadError(f"{where}.{key} = {value!r}; expected a whole number")
    if positive and value <= 0:
        raise WorkloadError(f"{where}.{key} = {value!r}; set it to a value > 0")
    if minimum is not None and value < minimum:
        raise WorkloadError(f"{where}.{key} = {value!r}; set it to a value >= {minimum:g}")
    return int(value) if integer else float(value)


# --------------------------------------------------------------------------- trace replay

_COMMON_KEYS = {"name", "kind", "rate_scale"}
_TRACE_KEYS = _COMMON_KEYS | {"format", "path", "bundled", "window", "max_requests"}
_SYNTH_KEYS = _COMMON_KEYS | {"rate", "duration_s", "num_requests", "lengths"}


def _trace_workload(cfg: Mapping, name: str, rate_scale: float) -> Workload:
    """Window (in original trace seconds), shift to 0, keep the first N, divide by rate_scale."""
    _check_keys(cfg, _TRACE_KEYS, "workload")
    window = cfg.get("window") or {}
    _check_keys(window, {"start_s", "duration_s"}, "workload.window")
    start = _num(window, "start_s", "workload.window", default=0.0, minimum=0.0)
    length = _num(window, "duration_s", "workload.window", positive=True, optional=True)
    limit = _num(cfg, "max_requests", "workload", integer=True, minimum=1, optional=True)
    if cfg.get("path") is None and cfg.get("bundled") is None:
        raise WorkloadError("workload: set workload.bundled to one of "
                            f"{sorted(BUNDLED)} or workload.path to a trace file")
    trace = load_trace(cfg.get("bundled"), cfg.get("path"), cfg.get("format"))

    end = math.inf if length is None else start + length
    keep = (trace.arrival_s >= start) & (trace.arrival_s < end)
    if not keep.any():
        raise WorkloadError(f"workload.window [{start:g}, {end:g}) s selects no request: the trace spans "
                            f"[0, {trace.arrival_s[-1]:.3f}] s; move window.start_s or widen window.duration_s")
    arrival = trace.arrival_s[keep][:limit]
    arrival = (arrival - arrival[0]) / rate_scale
    parts = [trace.label, *trace.notes,
             f"window {start:g}-{end:g} s" if length else f"window {start:g} s-end"]
    if limit is not None and keep.sum() > limit:
        parts.append(f"first {limit} requests")
    parts.append(f"rate x{rate_scale:g}")
    return Workload(name, arrival, trace.prompt_tokens[keep][:limit],
                    trace.output_tokens[keep][:limit], ", ".join(parts))


# --------------------------------------------------------------------------- synthetic

def _arrivals(rng: np.random.Generator, rate: float, cv: float, duration: float | None,
              count: int | None) -> np.ndarray:
    """Renewal process with gamma inter-arrivals (mean 1/rate, CV cv; cv=1 is Poisson).

    The first request arrives at 0. With `count`, exactly that many requests; otherwise
    every arrival in [0, duration).
    """
    shape = 1.0 / cv**2
    def gaps(n: int) -> np.ndarray:
        return rng.gamma(shape, 1.0 / (rate * shape), size=n)
    if count is not None:
        return np.concatenate([[0.0], np.cumsum(gaps(count - 1))])
    expected = rate * duration
    chunk = int(expected + 5 * cv * math.sqrt(expected) + 16)   # usually one draw suffices
    arrival = np.concatenate([[0.0], np.cumsum(gaps(chunk))])
    while arrival[-1] < duration:
        arrival = np.concatenate([arrival, arrival[-1] + np.cumsum(gaps(chunk))])
    return arrival[arrival < duration]


def _length_sampler(spec: Mapping, where: str) -> tuple[Callable[[np.random.Generator, int], np.ndarray], str]:
    """One length distribution -> (sampler(rng, n) -> int64 array >= 1, description)."""
    keys = {"fixed": {"value"}, "uniform": {"low", "high"}, "lognormal": {"mean", "sigma", "min", "max"},
            "empirical": {"trace", "column"}}
    dist = spec.get("dist") if isinstance(spec, Mapping) else None
    if dist not in keys:
        raise WorkloadError(f"{where}.dist = {dist!r}; choose one of {sorted(keys)}")
    _check_keys(spec, keys[dist] | {"dist"}, where)
    if dist == "fixed":
        value = _num(spec, "value", where, integer=True, minimum=1)
        return (lambda rng, n: np.full(n, value, np.int64)), f"fixed({value})"
    if dist == "uniform":
        low = _num(spec, "low", where, integer=True, minimum=1)
        high = _num(spec, "high", where, integer=True, minimum=low)
        return (lambda rng, n: rng.integers(low, high, size=n, endpoint=True)), f"uniform[{low}, {high}]"
    if dist == "lognormal":
        mean = _num(spec, "mean", where, minimum=1)
        sigma = _num(spec, "sigma", where, minimum=0)
        lo = _num(spec, "min", where, default=1, integer=True, minimum=1)
        hi = _num(spec, "max", where, integer=True, minimum=lo, optional=True)
        mu = math.log(mean) - sigma**2 / 2   # so that E[X] = mean before rounding and clipping
        def lognormal(rng: np.random.Generator, n: int) -> np.ndarray:
            return np.clip(np.rint(rng.lognormal(mu, sigma, size=n)), lo, hi).astype(np.int64)
        return lognormal, f"lognormal(mean {mean:g}, sigma {sigma:g}, clipped to [{lo}, {hi or 'inf'}])"
    column = spec.get("column")
    if column not in ("prompt", "output"):
        raise WorkloadError(f"{where}.column = {column!r}; choose 'prompt' or 'output'")
    trace = _trace_for_lengths(spec.get("trace"), where)
    values = trace.prompt_tokens if column == "prompt" else trace.output_tokens
    return (lambda rng, n: values[rng.integers(0, len(values), size=n)]), \
        f"empirical {column} lengths of {trace.label}"


def _trace_for_lengths(ref: Any, where: str) -> Trace:
    """`trace:` in a lengths spec is a bundled name, or else a file path."""
    if not ref:
        raise WorkloadError(f"{where}.trace is missing; name a bundled trace {sorted(BUNDLED)} or a file")
    return load_trace(bundled=ref) if ref in BUNDLED else load_trace(path=ref)


def _lengths(cfg: Mapping, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Draw (prompt, output) lengths: jointly from a trace, or from two independent laws."""
    spec = cfg.get("lengths")
    if not isinstance(spec, Mapping):
        raise WorkloadError("workload.lengths is missing; give {prompt: {...}, output: {...}} "
                            "or {dist: empirical_joint, trace: azure_conv_2023}")
    if spec.get("dist") == "empirical_joint":
        _check_keys(spec, {"dist", "trace"}, "workload.lengths")
        trace = _trace_for_lengths(spec.get("trace"), "workload.lengths")
        rows = rng.integers(0, len(trace.prompt_tokens), size=n)   # pairs keep their correlation
        return trace.prompt_tokens[rows], trace.output_tokens[rows], \
            f"(prompt, output) pairs sampled from {trace.label}"
    _check_keys(spec, {"prompt", "output"}, "workload.lengths")
    prompt, prompt_text = _length_sampler(spec.get("prompt"), "workload.lengths.prompt")
    output, output_text = _length_sampler(spec.get("output"), "workload.lengths.output")
    return prompt(rng, n), output(rng, n), f"prompt {prompt_text}, output {output_text}"


def _synthetic_workload(cfg: Mapping, name: str, rate_scale: float, seed: int) -> Workload:
    kind = cfg["kind"]
    _check_keys(cfg, _SYNTH_KEYS | ({"cv"} if kind == "gamma" else set()), "workload")
    rate = _num(cfg, "rate", "workload", positive=True) * rate_scale
    cv = _num(cfg, "cv", "workload", positive=True) if kind == "gamma" else 1.0
    count = _num(cfg, "num_requests", "workload", integer=True, minimum=1, optional=True)
    duration = None if count is not None else _num(cfg, "duration_s", "workload", positive=True)
    rng = np.random.default_rng(seed)
    arrival = _arrivals(rng, rate, cv, duration, count)
    prompt, output, lengths_text = _lengths(cfg, rng, len(arrival))
    process = "Poisson" if kind == "poisson" else f"gamma (CV {cv:g})"
    span = f"{count} requests" if count is not None else f"{duration:g} s"
    source = f"synthetic {process} arrivals at {rate:g} req/s (rate x{rate_scale:g}), {span}, " \
             f"seed {seed}; {lengths_text}"
    return Workload(name, arrival, prompt, output, source)


# --------------------------------------------------------------------------- entry point

def build_workload(cfg: Mapping, seed: int) -> Workload:
    """Build the workload that the `workload` config group describes.

    `cfg`: a DictConfig or plain mapping with `kind` in {trace, poisson, gamma} (see
    configs/workload/*.yaml for the keys). All randomness comes from
    `np.random.default_rng(seed)`: the same cfg and seed give identical arrays; trace
    replay uses no randomness. Raises WorkloadError for anything the user must fix.
    """
    cfg = _plain(cfg)
    if not isinstance(cfg, Mapping):
        raise WorkloadError(f"workload config must be a mapping, got {type(cfg).__name__}")
    kind = cfg.get("kind")
    if kind not in ("trace", "poisson", "gamma"):
        raise WorkloadError(f"workload.kind = {kind!r}; choose 'trace', 'poisson' or 'gamma'")
    name = str(cfg.get("name") or kind)
    rate_scale = _num(cfg, "rate_scale", "workload", default=1.0, positive=True)
    if kind == "trace":
        return _trace_workload(cfg, name, rate_scale)
    return _synthetic_workload(cfg, name, rate_scale, seed)
