"""The calibration file: what was measured on one kind of hardware, as points the step-time model can predict.

One JSON file (UTF-8), written by `python -m real profile`, `experiments/profile_gpu.py` or
`experiments/calibrate_public.py`, read by `python -m sim.calibrate`:

    {
      "metadata": {
        "hardware": "h100-sxm",        # required: a configs/hardware/<name>.yaml entry (datasheet peaks)
        "model": "llama3.1-8b",        # required: a configs/model/<name>.yaml entry (default for the points)
        "tp": 1,                       # required: GPUs per instance (default for the points)
        "date": "2026-11-26",          # required: when it was measured
        "vllm_version": "0.32.0",      # optional (null when not measured through vLLM)
        "torch_version": "2.13.0",     # optional
        "source": "python -m real profile ..."   # optional: how the points were obtained
        ...                            # other keys are kept as they are (`python -m real profile` adds the
                                       # CPU, the peaks it measured, the proxy hop, how steps were timed)
      },
      "points": [ {point}, ... ]
    }

A point is one measured step, kernel class or transfer:

    kind      required. What `time_s` covers:
                prefill | decode | mixed  a whole engine step (StepTimeModel.cost)
                served_prompt             a lone prompt sent to an idle server, from the router's send to its
                                          first token back, less the router's hop: the server's front end
                                          (`GPUSpec.frontend_s`) plus the prompt's step
                linear                    the linear layers of that step only (all layers, lm_head for the
                                          sampled sequences)
                attention                 the attention of that step only (all layers)
                overhead                  the host overhead of one step (scheduling, sampling, input prep;
                                          `python -m real profile`: the step minus the model's forward and
                                          lm_head, which leaves out the eager-mode dispatch inside the forward)
                allreduce                 one all-reduce of `bytes` over `tp` GPUs
                transfer                  one copy of `bytes` over `link` (a KV hand-off, a device copy)
    time_s    required, > 0: measured seconds (a median over repeats, preferably)
    the batch, for the step kinds, either as the `sim.step_time.BatchShape` fields
                tokens, attention_pairs, kv_read_tokens, sampled_seqs   (non-negative integers)
              or as per-sequence chunks from which BatchShape.of builds them:
                chunks: [[tokens computed, tokens cached], ...], sampled_seqs
    bytes     for allreduce and transfer, > 0
    link      for transfer: a label of the path measured ("d2d", "d2h", "nixl", ...)
    model, tp optional: override the metadata's for this point (public data mixes models and TPs)
    source    optional: where the point comes from (kept in reports)

Every problem found names the file, the point's index and the field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sim.step_time import BatchShape

STEP_KINDS = ("prefill", "decode", "mixed", "served_prompt", "linear", "attention", "overhead")
KINDS = STEP_KINDS + ("allreduce", "transfer")
BATCH_FIELDS = ("tokens", "attention_pairs", "kv_read_tokens", "sampled_seqs")
REQUIRED_METADATA = ("hardware", "model", "tp", "date")


class CalibrationFileError(ValueError):
    """A calibration file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class Point:
    """One measurement. `batch` is set for the step kinds, `bytes` for allreduce and transfer."""

    kind: str
    time_s: float
    model: str
    tp: int
    batch: BatchShape | None = None
    bytes: float | None = None
    link: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class CalibrationFile:
    metadata: dict[str, Any]
    points: list[Point] = field(default_factory=list)

    @property
    def hardware(self) -> str:
        return self.metadata["hardware"]


def point_record(point: Point) -> dict[str, Any]:
    """A point as it is written: the batch flattened into BatchShape's fields, unset fields left out."""
    record: dict[str, Any] = {"kind": point.kind, "time_s": point.time_s, "model": point.model, "tp": point.tp}
    if point.batch is not None:
        record |= asdict(point.batch)
    for name in ("bytes", "link", "source"):
        if getattr(point, name) is not None:
            record[name] = getattr(point, name)
    return record


def write_calibration_file(path: str | Path, metadata: dict[str, Any], points: list[Point]) -> Path:
    """Validate and write; returns the path. Raises CalibrationFileError as `read_calibration_file` would."""
    path = Path(path)
    document = {"metadata": dict(metadata), "points": [point_record(p) for p in points]}
    parse_calibration(document, str(path))   # refuse to write what could not be read back
    path.parent.mkdir(parents=True, exist_ok=True)
    # One point per line: compact, and diffs of a re-measured file stay readable.
    lines = ",\n".join(json.dumps(record) for record in document["points"])
    path.write_text(f'{{"metadata": {json.dumps(document["metadata"], indent=1)},\n"points": [\n{lines}\n]}}\n')
    return path


def read_calibration_file(path: str | Path) -> CalibrationFile:
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationFileError(f"{path}: no such calibration file") from None
    except json.JSONDecodeError as error:
        raise CalibrationFileError(f"{path}: not JSON ({error})") from None
    return parse_calibration(document, str(path))


def parse_calibration(document: Any, where: str) -> CalibrationFile:
    """The checked contents of a calibration document (the parsed JSON); `where` names it in errors."""
    if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
        raise CalibrationFileError(f"{where}: needs an object with 'metadata' (an object) and 'points' (a list)")
    metadata = document["metadata"]
    missing = [name for name in REQUIRED_METADATA if metadata.get(name) in (None, "")]
    if missing:
        raise CalibrationFileError(f"{where}: metadata lacks {missing}")
    _positive_int(metadata["tp"], f"{where}: metadata.tp")
    points = document.get("points")
    if not isinstance(points, list) or not points:
        raise CalibrationFileError(f"{where}: 'points' must be a non-empty list")
    return CalibrationFile(dict(metadata), [_point(record, metadata, f"{where}: points[{i}]")
                                            for i, record in enumerate(points)])


def _point(record: Any, metadata: dict[str, Any], where: str) -> Point:
    if not isinstance(record, dict):
        raise CalibrationFileError(f"{where}: a point must be an object")
    kind = record.get("kind")
    if kind not in KINDS:
        raise CalibrationFileError(f"{where}.kind: {kind!r} is not one of {list(KINDS)}")
    time_s = record.get("time_s")
    if not isinstance(time_s, (int, float)) or isinstance(time_s, bool) or not time_s > 0:
        raise CalibrationFileError(f"{where}.time_s: must be a number of seconds > 0, got {time_s!r}")
    tp = _positive_int(record.get("tp", metadata["tp"]), f"{where}.tp")
    model = record.get("model", metadata["model"])
    batch = nbytes = link = None
    if kind in STEP_KINDS:
        batch = _batch(record, where)
    else:
        nbytes = record.get("bytes")
        if not isinstance(nbytes, (int, float)) or isinstance(nbytes, bool) or not nbytes > 0:
            raise CalibrationFileError(f"{where}.bytes: a {kind} point needs bytes > 0, got {nbytes!r}")
        if kind == "transfer":
            link = record.get("link")
            if not isinstance(link, str) or not link:
                raise CalibrationFileError(f"{where}.link: a transfer point needs a link label")
        elif tp < 2:
            raise CalibrationFileError(f"{where}.tp: an allreduce point needs tp >= 2, got {tp}")
    return Point(kind, float(time_s), model, tp, batch, nbytes, link, record.get("source"))


def _batch(record: dict[str, Any], where: str) -> BatchShape:
    if "chunks" in record:
        chunks = record["chunks"]
        if not isinstance(chunks, list) or not all(
                isinstance(c, (list, tuple)) and len(c) == 2 and all(_is_count(v) for v in c) for c in chunks):
            raise CalibrationFileError(f"{where}.chunks: must be [[tokens computed, tokens cached], ...] "
                                       f"of non-negative integers")
        sampled = record.get("sampled_seqs", 0)
        if not _is_count(sampled):
            raise CalibrationFileError(f"{where}.sampled_seqs: must be a non-negative integer, got {sampled!r}")
        return BatchShape.of([tuple(c) for c in chunks], sampled)
    if record.get("kind") == "overhead":   # the host overhead needs no batch, but may record it
        values = {name: record.get(name, 0) for name in BATCH_FIELDS}
    else:
        absent = [name for name in BATCH_FIELDS if name not in record]
        if absent:
            raise CalibrationFileError(f"{where}: a {record['kind']} point needs 'chunks' or all of "
                                       f"{list(BATCH_FIELDS)}; missing {absent}")
        values = {name: record[name] for name in BATCH_FIELDS}
    for name, value in values.items():
        if not _is_count(value):
            raise CalibrationFileError(f"{where}.{name}: must be a non-negative integer, got {value!r}")
    return BatchShape(**values)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _positive_int(value: Any, where: str) -> int:
    if not _is_count(value) or value < 1:
        raise CalibrationFileError(f"{where}: must be a positive integer, got {value!r}")
    return value
