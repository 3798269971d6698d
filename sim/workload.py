"""Request workloads from the Hydra `workload` config group: replayed traces, reshaped to
the question asked, or synthetic arrivals with configurable lengths.

`build_workload(cfg, seed)` returns a `Workload` (see sim/workload_record.py; re-exported
here with `WorkloadError`). Kinds:

* `trace`: replay a trace file (sim/traces.py reads the formats; bundled copies in
  sim/data/), then shape it (sim/load_shaping.py) in this order: spread bucketed
  timestamps (`timestamps: spread`, `bucket_s`), `window`, `max_requests`, `thin`,
  superposed `copies`, `rate_scale` (time compression).
* `poisson`, `gamma`, `onoff`: synthetic renewal arrivals (sim/arrivals.py) at `rate` with
  gap CV `cv` (and on-period `burst_s` for onoff), or with rate and CV measured on a trace
  (`fit`); lengths drawn from distributions or from a trace or length-only dataset.

Every kind may clip to a model's context (`max_context`, `over_context`). Every problem a
user can cause raises `WorkloadError` with a message that says what to change; for files it
names the file, the 1-based line and the field. All randomness comes from `seed`: each
random step draws from its own stream, so turning one step on does not change another's draws.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sim import load_shaping
from sim.arrivals import ArrivalProcess, rate_and_cv
from sim.traces import BUNDLED, load_trace, trace_format
from sim.workload_record import Workload, WorkloadError

__all__ = ["Workload", "WorkloadError", "build_workload"]


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


# --------------------------------------------------------------------------- shared keys

_COMMON_KEYS = {"name", "kind", "rate_scale", "max_context", "over_context"}
_TRACE_KEYS = _COMMON_KEYS | {"format", "path", "bundled", "timestamps", "bucket_s", "window",
                              "max_requests", "thin", "copies"}
_SYNTH_KEYS = _COMMON_KEYS | {"rate", "fit", "duration_s", "num_requests", "lengths"}
_PROCESS_KEYS = {"poisson": set(), "gamma": {"cv"}, "onoff": {"cv", "burst_s"}}

# One random stream per step (np.random.default_rng([seed, stream])).
_SPREAD, _THIN, _COPIES = 1, 2, 3


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _choice(cfg: Mapping, key: str, choices: tuple[str, ...], default: str) -> str:
    value = cfg.get(key) or default
    if value not in choices:
        raise WorkloadError(f"workload.{key} = {value!r}; choose one of {', '.join(choices)}")
    return value


def _clip(cfg: Mapping, w: Workload) -> Workload:
    """`max_context` (tokens, prompt + output; null = no limit) and `over_context` (truncate | drop)."""
    policy = _choice(cfg, "over_context", ("truncate", "drop"), "truncate")
    limit = _num(cfg, "max_context", "workload", integer=True, minimum=2, optional=True)
    return w if limit is None else load_shaping.clip_to_context(w, limit, policy)


def _trace_ref(ref: Any, where: str) -> Workload:
    """A trace named in a config: a bundled name, a file path (Azure CSV), or {path, format}."""
    if isinstance(ref, Mapping):
        _check_keys(ref, {"bundled", "path", "format"}, where)
        return load_trace(ref.get("bundled"), ref.get("path"), ref.get("format"))
    if not ref:
        raise WorkloadError(f"{where} is missing; name a bundled trace {sorted(BUNDLED)}, a file, "
                            "or {path: FILE, format: FORMAT}")
    return load_trace(bundled=ref) if ref in BUNDLED else load_trace(path=ref)


# --------------------------------------------------------------------------- trace replay

def _trace_workload(cfg: Mapping, name: str, rate_scale: float, seed: int) -> Workload:
    _check_keys(cfg, _TRACE_KEYS, "workload")
    window = cfg.get("window") or {}
    _check_keys(window, {"start_s", "duration_s"}, "workload.window")
    start = _num(window, "start_s", "workload.window", default=0.0, minimum=0.0)
    length = _num(window, "duration_s", "workload.window", positive=True, optional=True)
    limit = _num(cfg, "max_requests", "workload", integer=True, minimum=1, optional=True)
    keep = _num(cfg, "thin", "workload", default=1.0, positive=True)
    if keep > 1:
        raise WorkloadError(f"workload.thin = {keep:g}; it is the share of requests kept, in (0, 1]: "
                            "to raise the rate use rate_scale or copies")
    copies = _num(cfg, "copies", "workload", default=1, integer=True, minimum=1)
    timestamps = _choice(cfg, "timestamps", ("as_is", "spread"), "as_is")
    bucket_s = _num(cfg, "bucket_s", "workload", default=3.0, positive=True)
    if cfg.get("path") is None and cfg.get("bundled") is None:
        raise WorkloadError(f"workload.path is null: set it to your {cfg.get('format') or 'trace'} file "
                            f"(relative to the launch directory), or workload.bundled to one of {sorted(BUNDLED)}")
    fmt = trace_format(cfg.get("bundled"), cfg.get("path"), cfg.get("format"))
    if fmt.time is None:
        raise WorkloadError(f"workload: the {fmt.name} format has no arrival times; use kind poisson, "
                            "gamma or onoff with lengths: {dist: empirical_joint, trace: ...}")
    w = load_trace(cfg.get("bundled"), cfg.get("path"), fmt.name)
    if timestamps == "spread":
        w = load_shaping.spread_buckets(w, bucket_s, _rng(seed, _SPREAD))
    w = load_shaping.window(w, start, length)
    if limit is not None:
        w = load_shaping.first(w, limit)
    w = load_shaping.thin(w, keep, _rng(seed, _THIN))
    w = load_shaping.superpose(w, copies, _rng(seed, _COPIES))
    w = load_shaping.time_scale(w, rate_scale)
    return dataclasses.replace(_clip(cfg, w), name=name)


# --------------------------------------------------------------------------- synthetic

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
    trace = _trace_ref(spec.get("trace"), f"{where}.trace")
    values = trace.prompt_tokens if column == "prompt" else trace.output_tokens
    return (lambda rng, n: values[rng.integers(0, len(values), size=n)]), \
        f"empirical {column} lengths of {trace.source}"


def _lengths(cfg: Mapping, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Draw (prompt, output) lengths: jointly from a trace, or from two independent laws."""
    spec = cfg.get("lengths")
    if not isinstance(spec, Mapping):
        raise WorkloadError("workload.lengths is missing; give {prompt: {...}, output: {...}} "
                            "or {dist: empirical_joint, trace: azure_conv_2023}")
    if spec.get("dist") == "empirical_joint":
        _check_keys(spec, {"dist", "trace"}, "workload.lengths")
        trace = _trace_ref(spec.get("trace"), "workload.lengths.trace")
        rows = rng.integers(0, len(trace.prompt_tokens), size=n)   # pairs keep their correlation
        return trace.prompt_tokens[rows], trace.output_tokens[rows], \
            f"(prompt, output) pairs sampled from {trace.source}"
    _check_keys(spec, {"prompt", "output"}, "workload.lengths")
    prompt, prompt_text = _length_sampler(spec.get("prompt"), "workload.lengths.prompt")
    output, output_text = _length_sampler(spec.get("output"), "workload.lengths.output")
    return prompt(rng, n), output(rng, n), f"prompt {prompt_text}, output {output_text}"


def _process(cfg: Mapping, kind: str, rate_scale: float) -> tuple[ArrivalProcess, str]:
    """The arrival process, with rate and CV from the config or measured on `fit`'s trace."""
    fit = cfg.get("fit")
    if fit is not None:
        given = [k for k in ("rate", "cv") if cfg.get(k) is not None]
        if given:
            raise WorkloadError(f"workload: fit measures rate and cv on a trace; set {' and '.join(given)} "
                                "to null, or fit to null to give them")
        trace = _trace_ref(fit, "workload.fit")
        rate, cv = rate_and_cv(trace.arrival_s)
        fitted = f", rate and CV fitted to {trace.source}"
    else:
        rate = _num(cfg, "rate", "workload", positive=True)
        cv = _num(cfg, "cv", "workload", positive=True) if kind != "poisson" else 1.0
        fitted = ""
    burst_s = _num(cfg, "burst_s", "workload", positive=True) if kind == "onoff" else None
    return ArrivalProcess(kind, rate * rate_scale, 1.0 if kind == "poisson" else cv, burst_s), fitted


def _synthetic_workload(cfg: Mapping, name: str, rate_scale: float, seed: int) -> Workload:
    kind = cfg["kind"]
    _check_keys(cfg, _SYNTH_KEYS | _PROCESS_KEYS[kind], "workload")
    process, fitted = _process(cfg, kind, rate_scale)
    count = _num(cfg, "num_requests", "workload", integer=True, minimum=1, optional=True)
    duration = None if count is not None else _num(cfg, "duration_s", "workload", positive=True)
    rng = np.random.default_rng(seed)
    arrival = process.sample(rng, duration, count)
    prompt, output, lengths_text = _lengths(cfg, rng, len(arrival))
    span = f"{count} requests" if count is not None else f"{duration:g} s"
    source = f"synthetic {process.label()} (rate x{rate_scale:g}){fitted}, {span}, seed {seed}; {lengths_text}"
    return _clip(cfg, Workload(name, arrival, prompt, output, source))


# --------------------------------------------------------------------------- entry point

def build_workload(cfg: Mapping, seed: int) -> Workload:
    """Build the workload that the `workload` config group describes.

    `cfg`: a DictConfig or plain mapping with `kind` in {trace, poisson, gamma, onoff} (see
    configs/workload/*.yaml for the keys). The same cfg and seed give identical arrays; a
    trace replayed without spreading, thinning or copies uses no randomness. Raises
    WorkloadError for anything the user must fix.
    """
    cfg = _plain(cfg)
    if not isinstance(cfg, Mapping):
        raise WorkloadError(f"workload config must be a mapping, got {type(cfg).__name__}")
    kind = cfg.get("kind")
    if kind not in ("trace", *_PROCESS_KEYS):
        raise WorkloadError(f"workload.kind = {kind!r}; choose 'trace', 'poisson', 'gamma' or 'onoff'")
    name = str(cfg.get("name") or kind)
    rate_scale = _num(cfg, "rate_scale", "workload", default=1.0, positive=True)
    if kind == "trace":
        return _trace_workload(cfg, name, rate_scale, seed)
    return _synthetic_workload(cfg, name, rate_scale, seed)
