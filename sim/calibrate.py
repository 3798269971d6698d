"""`python -m sim.calibrate <file> --name <name> [--holdout 0.2] [--seed 0] [--seq-overhead] [--kv-read]
[--frontend] [--fit-kinds K,...] [--hold-out-source TEXT ...] [--hardware NAME]`

Fits the step-time model of the file's hardware to its points (`sim.fit`), prints every
point's measured and predicted time, and writes the named calibration
configs/calibration/<name>.yaml. A hardware entry uses it with `calibration: <name>`.

The named calibration holds the same keys as a hardware entry (`efficiency`,
`allreduce_latency_s`, `step_overhead_s`, `seq_overhead_s` when `--seq-overhead` fits the host
cost per sampled sequence, `efficiency.kv_read` when `--kv-read` fits attention's KV reads apart
from `memory`, `frontend_s` when `--frontend` fits a server front end's seconds per request;
see `sim.catalog.CALIBRATED`) plus where they come
from: the calibration file and its metadata, the date of the fit, which parameters the
points determined (the others keep the hardware entry's inline values), the error on the
fitted and the held-out points, and the error of the inline values on the same points.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from sim.calibration import Point, read_calibration_file
from sim.catalog import CONFIG_DIR, GPUSpec, ModelSpec, gpu_from_config, load_config, model_from_config
from sim.fit import (EFFICIENCIES, FRONTEND, KV_READ, PARAMETERS, SEQ_OVERHEAD, FitResult, fit, fit_links,
                     holdout_mask, predict, relative_errors, summarise, with_parameters)


def inline_gpu(hardware: str) -> GPUSpec:
    """The hardware entry with its inline values, whatever calibration it names."""
    return gpu_from_config({**load_config("hardware", hardware), "calibration": None})


def models_of(points: Sequence[Point]) -> dict[str, ModelSpec]:
    return {name: model_from_config(load_config("model", name)) for name in sorted({p.model for p in points})}


def error_report(points: Sequence[Point], predicted_s: np.ndarray, result: FitResult) -> dict[str, Any]:
    """Error summaries of `predicted_s` on the fitted and the held-out points."""
    errors = relative_errors(predicted_s, points)
    fitted, held = summarise(errors[result.fitted]), summarise(errors[result.held_out])
    return {"fitted": fitted.as_dict(), "held_out": held.as_dict() if held else None}


def calibration_record(name: str, hardware: str, source: dict[str, Any], points: Sequence[Point],
                       result: FitResult, prior: GPUSpec, models: dict[str, ModelSpec]) -> dict[str, Any]:
    """The named calibration as it is written (see the module docstring). Its errors are those
    of the values as written (rounded), so that loading it reproduces them exactly."""
    values = {key: float(f"{value:.4g}") for key, value in result.parameters.items()}
    links = fit_links(points)
    return {
        "name": name,
        "hardware": hardware,
        "date": dt.date.today().isoformat(),
        "source": source,
        "efficiency": {key: values[key] for key in EFFICIENCIES + ((KV_READ,) if KV_READ in values else ())},
        "allreduce_latency_s": values["allreduce_latency_s"],
        "step_overhead_s": values["step_overhead_s"],
        **{key: values[key] for key in (SEQ_OVERHEAD, FRONTEND) if key in values},
        "fitted_parameters": list(result.free),
        "error": error_report(points, predict(points, with_parameters(prior, values), models), result),
        "error_with_inline_values": error_report(points, predict(points, prior, models), result),
        "links": {link: {"latency_s": float(f"{f.latency_s:.4g}"), "bandwidth": float(f"{f.bandwidth:.4g}"),
                         "error": f.error.as_dict()} for link, f in links.items()} or None,
    }


def write_named_calibration(record: dict[str, Any], directory: Path = CONFIG_DIR / "calibration") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record['name']}.yaml"
    header = (f"# Named calibration {record['name']!r} for hardware {record['hardware']!r}, written by "
              f"python -m sim.calibrate (do not edit by hand: refit).\n"
              f"# Errors are |predicted / measured - 1| over points; 'error_with_inline_values' is the hardware\n"
              f"# entry's own values on the same points. Parameters not in fitted_parameters keep those values.\n")
    path.write_text(header + yaml.safe_dump(record, sort_keys=False))
    return path


def point_table(points: Sequence[Point], result: FitResult) -> str:
    """One line per point: what it is, measured and predicted ms, relative error, its role."""
    errors = relative_errors(result.predicted_s, points)
    lines = [f"{'#':>5} {'kind':<13} {'model':<13} {'tp':>2} {'what':<38} {'measured ms':>12} "
             f"{'model ms':>10} {'error':>8}  role"]
    for i, (point, predicted, error) in enumerate(zip(points, result.predicted_s, errors)):
        if point.batch is not None:
            b = point.batch
            what = f"tok {b.tokens} pairs {b.attention_pairs} kv {b.kv_read_tokens} smp {b.sampled_seqs}"
        else:
            what = f"{point.bytes:.4g} B" + (f" over {point.link}" if point.link else "")
        role = "fit" if result.fitted[i] else "held out" if result.held_out[i] else "link"
        shown = f"{predicted * 1e3:10.4f} {error:+8.1%}" if np.isfinite(predicted) else f"{'-':>10} {'-':>8}"
        lines.append(f"{i:5d} {point.kind:<13} {point.model:<13} {point.tp:2d} {what[:38]:<38} "
                     f"{point.time_s * 1e3:12.4f} {shown}  {role}")
    return "\n".join(lines)


def summary_lines(record: dict[str, Any]) -> str:
    lines = [f"fitted {record['fitted_parameters']}: efficiency {record['efficiency']}, "
             f"allreduce_latency_s {record['allreduce_latency_s']:.3g}, "
             f"step_overhead_s {record['step_overhead_s']:.3g}"
             + "".join(f", {key} {record[key]:.3g}" for key in (SEQ_OVERHEAD, FRONTEND) if key in record)]
    for label, key in (("calibrated", "error"), ("inline values", "error_with_inline_values")):
        for role, s in record[key].items():
            if s:
                lines.append(f"{label:>14} on {role:<8} points: n={s['points']:<5} median |err| "
                             f"{s['median_abs']:.1%}  p90 |err| {s['p90_abs']:.1%}  mean err {s['mean']:+.1%}")
    for link, f in (record["links"] or {}).items():
        lines.append(f"link {link}: latency {f['latency_s'] * 1e6:.1f} us, bandwidth {f['bandwidth'] / 1e9:.2f} GB/s, "
                     f"median |err| {f['error']['median_abs']:.1%}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m sim.calibrate", description=__doc__.split("\n\n")[1])
    parser.add_argument("file", type=Path, help="calibration file (JSON, schema in sim/calibration.py)")
    parser.add_argument("--name", required=True, help="writes configs/calibration/<name>.yaml")
    parser.add_argument("--holdout", type=float, default=0.0, help="fraction of points held out of the fit")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out draw")
    parser.add_argument("--seq-overhead", action="store_true",
                        help="also fit seq_overhead_s, the host seconds per sequence sampled in a step")
    parser.add_argument("--kv-read", action="store_true",
                        help="also fit efficiency.kv_read, attention's KV-read efficiency apart from memory's "
                             "(needs decode points at several contexts)")
    parser.add_argument("--frontend", action="store_true",
                        help="also fit frontend_s, a server front end's seconds per request (from served_prompt "
                             "points; include the kind in --fit-kinds)")
    parser.add_argument("--fit-kinds", default=None,
                        help="comma-separated point kinds to fit (e.g. prefill,decode,mixed); points of other "
                             "kinds are held out and reported. Default: every kind")
    parser.add_argument("--hold-out-source", action="append", default=[],
                        help="hold out the points whose source contains this text (e.g. 'engine decode'); "
                             "may be repeated")
    parser.add_argument("--hardware", default=None,
                        help="the configs/hardware/ entry to fit for (default: the file's metadata.hardware); e.g. "
                             "another entry of the same machine whose points are a subset of the file's")
    parser.add_argument("--out-dir", type=Path, default=CONFIG_DIR / "calibration")
    args = parser.parse_args(argv)

    calibration = read_calibration_file(args.file)
    points = calibration.points
    hardware = args.hardware or calibration.hardware
    prior, models = inline_gpu(hardware), models_of(points)
    names = PARAMETERS + tuple(name for name, asked in ((SEQ_OVERHEAD, args.seq_overhead), (KV_READ, args.kv_read),
                                                        (FRONTEND, args.frontend)) if asked)
    held = holdout_mask(len(points), args.holdout, args.seed)
    if args.fit_kinds:
        kinds = set(args.fit_kinds.split(","))
        held |= np.array([p.kind not in kinds for p in points])
    for text in args.hold_out_source:
        held |= np.array([text in (p.source or "") for p in points])
    result = fit(points, prior, models, held, names)
    print(point_table(points, result))
    source = {"file": str(args.file), "metadata": calibration.metadata,
              "holdout": {"fraction": args.holdout, "seed": args.seed, "fit_kinds": args.fit_kinds,
                          "source_held_out": args.hold_out_source},
              "command": " ".join(["python -m sim.calibrate", *(sys.argv[1:] if argv is None else argv)])}
    record = calibration_record(args.name, hardware, source, points, result, prior, models)
    print(summary_lines(record))
    path = write_named_calibration(record, args.out_dir)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
