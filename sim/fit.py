"""Fitting the step-time model's efficiencies and latencies to measured points.

The fitted quantities are the physical ones the model already has (`sim.step_time`):
`Efficiency.gemm`, `.attention`, `.memory`, `.nvlink` (fractions of datasheet peaks, in (0, 1])
and `GPUSpec.allreduce_latency_s`, `.step_overhead_s` (seconds, >= 0); when asked, `.seq_overhead_s`
(seconds per sampled sequence, >= 0), `Efficiency.kv_read` (attention's KV reads apart from
`memory`) and `.frontend_s` (a server front end's seconds per request, from `served_prompt`
points). The fit minimises the sum of squared relative errors (predicted / measured - 1) with
scipy's bounded least squares.

A parameter that no point depends on (no attention points, no TP > 1, no whole steps) keeps
the value it had in the hardware config. One that the points do not pin down at the solution
(an efficiency whose kernels all end up bound by the other roofline) is reported as not fitted.

Transfer points are not predicted by the step-time model; `fit_links` fits each link label
its own per-transfer latency and bandwidth.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import least_squares

from sim.calibration import Point
from sim.catalog import Efficiency, GPUSpec, ModelSpec
from sim.step_time import StepTimeModel

EFFICIENCIES = ("gemm", "attention", "memory", "nvlink")
LATENCIES = ("allreduce_latency_s", "step_overhead_s")
# Fitted only when asked (`fit(..., parameters=PARAMETERS + (SEQ_OVERHEAD,))`): a host cost per sampled
# sequence, which a GPU profile of kernels does not contain but a CPU server's steps do.
SEQ_OVERHEAD = "seq_overhead_s"
# Fitted only when asked: attention's KV-read efficiency apart from `memory` (it needs decode points at
# more than one context to be told apart from the per-step costs).
KV_READ = "kv_read"
# Fitted only when asked, from `served_prompt` points: the server front end's seconds per request.
FRONTEND = "frontend_s"
PARAMETERS = EFFICIENCIES + LATENCIES
_FRACTIONS = EFFICIENCIES + (KV_READ,)   # bounded to (0, 1]
# Units the optimiser works in, so that every variable is of order one.
_SCALE = {"gemm": 1.0, "attention": 1.0, "memory": 1.0, "nvlink": 1.0, "kv_read": 1.0,
          "allreduce_latency_s": 1e-6, "step_overhead_s": 1e-3, "seq_overhead_s": 1e-4, "frontend_s": 1e-3}
_MIN_EFFICIENCY = 1e-3   # an efficiency of 0 would make a kernel take forever


@dataclass(frozen=True, slots=True)
class FitResult:
    """Fitted parameter values, which of them were free, and every point's prediction and role."""

    parameters: dict[str, float]
    free: tuple[str, ...]       # the parameters the fitted points determine; the others keep their values
    predicted_s: np.ndarray     # per point; NaN for transfer points
    fitted: np.ndarray          # bool per point: used in the fit
    held_out: np.ndarray        # bool per point: predicted, not used in the fit


@dataclass(frozen=True, slots=True)
class ErrorSummary:
    points: int
    median_abs: float      # median |predicted / measured - 1|
    p90_abs: float
    mean: float            # signed mean: > 0 when the model is slow

    def as_dict(self) -> dict[str, float | int]:
        return {"points": self.points, "median_abs": round(self.median_abs, 4),
                "p90_abs": round(self.p90_abs, 4), "mean": round(self.mean, 4)}


def parameters_of(gpu: GPUSpec, names: Sequence[str] = PARAMETERS) -> dict[str, float]:
    """The values of `names` (PARAMETERS, optionally SEQ_OVERHEAD, KV_READ) in `gpu`; KV_READ is
    `memory`'s where the entry does not set it apart."""
    eff = gpu.efficiency
    values = {"gemm": eff.gemm, "attention": eff.attention, "memory": eff.memory, "nvlink": eff.nvlink,
              KV_READ: eff.kv_read_in_effect,
              "allreduce_latency_s": gpu.allreduce_latency_s, "step_overhead_s": gpu.step_overhead_s,
              SEQ_OVERHEAD: gpu.seq_overhead_s, FRONTEND: gpu.frontend_s}
    return {name: values[name] for name in names}


def with_parameters(gpu: GPUSpec, values: Mapping[str, float]) -> GPUSpec:
    """`gpu` with the efficiencies and latencies in `values` (the others unchanged; KV_READ stays
    tied to `memory` unless `values` or `gpu` sets it)."""
    current = parameters_of(gpu, PARAMETERS + (SEQ_OVERHEAD, FRONTEND)) | dict(values)
    kv_read = values.get(KV_READ, gpu.efficiency.kv_read)
    efficiency = Efficiency(*(float(current[name]) for name in EFFICIENCIES),
                            kv_read=None if kv_read is None else float(kv_read))
    return replace(gpu, efficiency=efficiency,
                   allreduce_latency_s=float(current["allreduce_latency_s"]),
                   step_overhead_s=float(current["step_overhead_s"]),
                   seq_overhead_s=float(current["seq_overhead_s"]), frontend_s=float(current[FRONTEND]))


def predict(points: Sequence[Point], gpu: GPUSpec, models: Mapping[str, ModelSpec]) -> np.ndarray:
    """Seconds the step-time model gives for each point (NaN for transfers)."""
    out = np.full(len(points), np.nan)
    by_instance: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, point in enumerate(points):
        if point.kind != "transfer":
            by_instance[(point.model, point.tp)].append(i)
    for (model, tp), indices in by_instance.items():
        step = StepTimeModel(models[model], gpu, tp)
        for i in indices:
            out[i] = _predict_one(step, points[i])
    return out


def _predict_one(step: StepTimeModel, point: Point) -> float:
    if point.kind == "allreduce":
        return step.allreduce_time(point.bytes)
    parts = step.breakdown(point.batch)
    if point.kind in parts:          # a kernel class measured on its own
        return parts[point.kind]
    if point.kind == "served_prompt":
        return step.gpu.frontend_s + sum(parts.values())
    return sum(parts.values())       # a whole step: prefill, decode or mixed


def relative_errors(predicted_s: np.ndarray, points: Sequence[Point]) -> np.ndarray:
    return predicted_s / np.array([p.time_s for p in points]) - 1.0


def summarise(errors: np.ndarray) -> ErrorSummary | None:
    errors = errors[np.isfinite(errors)]
    if errors.size == 0:
        return None
    absolute = np.abs(errors)
    return ErrorSummary(int(errors.size), float(np.median(absolute)), float(np.quantile(absolute, 0.9)),
                        float(errors.mean()))


def holdout_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """A random `fraction` of n points (rounded, at least one when fraction > 0) to hold out."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    mask = np.zeros(n, dtype=bool)
    count = max(1, round(fraction * n)) if fraction > 0 else 0
    mask[np.random.default_rng(seed).choice(n, size=count, replace=False)] = True
    return mask


def fit(points: Sequence[Point], gpu: GPUSpec, models: Mapping[str, ModelSpec],
        held_out: np.ndarray | None = None, parameters: Sequence[str] = PARAMETERS) -> FitResult:
    """Least squares on relative error over the points not `held_out` (and not transfers),
    starting from the hardware config's values in `gpu`; `parameters` are the candidates to fit
    (add SEQ_OVERHEAD for the per-sequence host cost, KV_READ for attention's KV reads apart,
    FRONTEND for the server front end's cost per request)."""
    held_out = np.zeros(len(points), dtype=bool) if held_out is None else np.asarray(held_out, dtype=bool)
    modelled = np.array([p.kind != "transfer" for p in points])
    fitted = modelled & ~held_out
    if not fitted.any():
        raise ValueError("no points to fit: every point is held out or a transfer")
    train = [p for p, use in zip(points, fitted) if use]
    measured = np.array([p.time_s for p in train])
    parameters = tuple(parameters)
    prior = parameters_of(gpu, parameters)
    free = _influential_parameters(train, gpu, models, parameters)
    if free:
        def residuals(x: np.ndarray) -> np.ndarray:
            values = {name: v * _SCALE[name] for name, v in zip(free, x)}
            return predict(train, with_parameters(gpu, values), models) / measured - 1.0

        lower = [_MIN_EFFICIENCY if name in _FRACTIONS else 0.0 for name in free]
        upper = [1.0 if name in _FRACTIONS else np.inf for name in free]
        start = np.clip([prior[name] / _SCALE[name] for name in free], lower, upper)
        solution = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac")
        values = prior | {name: float(v * _SCALE[name]) for name, v in zip(free, solution.x)}
    else:
        values = prior
    fitted_gpu = with_parameters(gpu, values)
    determined = _determined_parameters(train, fitted_gpu, models, free)
    return FitResult(values, determined, predict(points, fitted_gpu, models), fitted, held_out & modelled)


def _moves_predictions(points: Sequence[Point], gpu: GPUSpec, models: Mapping[str, ModelSpec],
                       name: str, value: float, base: np.ndarray) -> bool:
    changed = predict(points, with_parameters(gpu, {name: value}), models)
    return not np.allclose(changed, base, rtol=1e-9, atol=0)


def _influential_parameters(points: Sequence[Point], gpu: GPUSpec, models: Mapping[str, ModelSpec],
                            names: Sequence[str]) -> tuple[str, ...]:
    """Of `names`, the parameters that some point's prediction depends on anywhere in their range:
    an efficiency probed at its floor (every kernel of its class then bound by it), a latency raised."""
    base, prior = predict(points, gpu, models), parameters_of(gpu, names)
    probes = {name: _MIN_EFFICIENCY if name in _FRACTIONS else prior[name] + _SCALE[name] for name in names}
    return tuple(name for name in names if _moves_predictions(points, gpu, models, name, probes[name], base))


def _determined_parameters(points: Sequence[Point], gpu: GPUSpec, models: Mapping[str, ModelSpec],
                           names: Sequence[str]) -> tuple[str, ...]:
    """Of `names`, those the points pin down at `gpu`'s values: a 5 % change either way moves a
    prediction (an efficiency whose kernels are all bound by the other roofline does not)."""
    base, values = predict(points, gpu, models), parameters_of(gpu, names)
    return tuple(name for name in names
                 if any(_moves_predictions(points, gpu, models, name, values[name] * factor, base)
                        for factor in (0.95, 1.05)))


@dataclass(frozen=True, slots=True)
class LinkFit:
    """A transfer path: time = latency_s + bytes / bandwidth."""

    latency_s: float
    bandwidth: float     # B/s
    error: ErrorSummary


def fit_links(points: Sequence[Point]) -> dict[str, LinkFit]:
    """Per-transfer latency and bandwidth of each link label, least squares on relative error."""
    by_link: dict[str, list[Point]] = defaultdict(list)
    for point in points:
        if point.kind == "transfer":
            by_link[point.link].append(point)
    fits = {}
    for link, group in sorted(by_link.items()):
        nbytes = np.array([p.bytes for p in group])
        measured = np.array([p.time_s for p in group])
        # Unknowns in microseconds and GB/s, so both are of order one.
        def residuals(x: np.ndarray) -> np.ndarray:
            return (x[0] * 1e-6 + nbytes / (x[1] * 1e9)) / measured - 1.0

        start = [max(measured.min() * 1e6 / 2, 1e-3), max(float(np.median(nbytes / measured)) / 1e9, 1e-6)]
        solution = least_squares(residuals, start, bounds=([0.0, 1e-9], [np.inf, np.inf]))
        fits[link] = LinkFit(float(solution.x[0] * 1e-6), float(solution.x[1] * 1e9),
                             summarise(residuals(solution.x)))
    return fits
