"""Trace readers: the public LLM request-trace formats, parsed into a `Workload`.

Formats (`FORMATS`), each a CSV or JSONL file, plain or gzipped (detected by magic bytes):

* `azure2023`, `azure2024`: Azure LLM inference traces, `TIMESTAMP,ContextTokens,GeneratedTokens`.
  Timestamps are ISO 8601 wall clock; 2023 has 100 ns digits and no zone, 2024 a zone
  offset and sub-second digits of varying length (`2024-05-10 00:00:00.009930+00:00`,
  `...00:00:01+00:00`). Both go through int64 nanoseconds in UTC, so no digit is lost.
* `mooncake`: Mooncake FAST'25 JSONL, `timestamp` (ms), `input_length`, `output_length`,
  `hash_ids` (512-token prefix blocks), carried into `Workload.prefix_block_hashes`.
* `burstgpt`: BurstGPT CSV, `Timestamp` (s), `Model`, `Request tokens`, `Response tokens`,
  `Total tokens`, `Log Type` (v1/v2), plus `Session ID`, `Elapsed time` (v3).
* `csv`, `jsonl`: users' own logs with `arrival_s`, `prompt_tokens`, `output_tokens`.
* `lengths`: length-only datasets (vidur / sarathi-serve stats: `num_prefill_tokens`,
  `num_decode_tokens`, optionally `num_total_tokens`, `pd_ratio`); every arrival is 0 and
  the lengths are meant for a synthetic arrival process.

Every file is read in a streaming way (CSV in pandas chunks, JSONL line by line), so a
10-million-row file costs its arrays, not its text. A malformed line stops the load with
`WorkloadError` naming the file, the 1-based physical line (CSV header = line 1) and the
field; so do an empty file, a missing column and a column the format does not know.
Rows out of time order are sorted (stably) and the workload's `source` says so.

Zero token counts: BurstGPT logs failed requests with zero response tokens, so its rows
with a zero count are skipped (and counted in `source`). In the other formats a zero count
is clamped to 1 (and counted): dropping would thin the arrival process being replayed, and
a served request always runs a prefill and emits at least one token.
"""

from __future__ import annotations

import codecs
import csv
import functools
import gzip
import io
import json
import math
import re
import zlib
from array import array
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Callable, Iterator, Literal

import numpy as np
import pandas as pd

from sim.workload_record import Workload, WorkloadError, gather_blocks

TimeUnit = Literal["datetime", "s", "ms", "none"]


@dataclass(frozen=True)
class TraceFormat:
    """Column names of one trace format and how to read them."""

    name: str
    container: Literal["csv", "jsonl"]
    time: str | None                 # arrival column; None for length-only datasets
    time_unit: TimeUnit
    prompt: str
    output: str
    hashes: str | None = None        # prefix-block hash list column (JSONL only)
    block_tokens: int | None = None  # tokens per hashed block
    other: tuple[str, ...] = ()      # further columns the format has; read past
    zero_rows: Literal["clamp", "skip"] = "clamp"
    time_example: str = ""

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c for c in (self.time, self.prompt, self.output, self.hashes) if c)

    @property
    def known(self) -> tuple[str, ...]:
        return self.required + self.other


_AZURE = dict(container="csv", time="TIMESTAMP", time_unit="datetime", prompt="ContextTokens",
              output="GeneratedTokens")
FORMATS: dict[str, TraceFormat] = {f.name: f for f in (
    TraceFormat("azure2023", **_AZURE, time_example="2023-11-16 18:15:46.6805900"),
    TraceFormat("azure2024", **_AZURE, time_example="2024-05-10 00:00:00.009930+00:00"),
    TraceFormat("mooncake", "jsonl", "timestamp", "ms", "input_length", "output_length",
                hashes="hash_ids", block_tokens=512),
    TraceFormat("burstgpt", "csv", "Timestamp", "s", "Request tokens", "Response tokens",
                other=("Model", "Total tokens", "Log Type", "Session ID", "Elapsed time"), zero_rows="skip"),
    TraceFormat("csv", "csv", "arrival_s", "s", "prompt_tokens", "output_tokens"),
    TraceFormat("jsonl", "jsonl", "arrival_s", "s", "prompt_tokens", "output_tokens"),
    TraceFormat("lengths", "csv", None, "none", "num_prefill_tokens", "num_decode_tokens",
                other=("num_total_tokens", "pd_ratio")),
)}

# name -> (file in sim/data, format, label); the label travels into Workload.source.
BUNDLED: dict[str, tuple[str, str, str]] = {
    "azure_conv_2023": ("azure_conv_2023.csv.gz", "azure2023",
                        "Azure LLM inference trace 2023 (conv), Azure/AzurePublicDataset, CC-BY-4.0"),
    "azure_code_2023": ("azure_code_2023.csv.gz", "azure2023",
                        "Azure LLM inference trace 2023 (code), Azure/AzurePublicDataset, CC-BY-4.0"),
    "mooncake_conversation": ("mooncake_conversation.jsonl.gz", "mooncake",
                              "Mooncake FAST'25 conversation trace, kvcache-ai/Mooncake, Apache-2.0"),
    "mooncake_synthetic": ("mooncake_synthetic.jsonl.gz", "mooncake",
                           "Mooncake FAST'25 synthetic trace, kvcache-ai/Mooncake, Apache-2.0"),
    "sharegpt_8k": ("sharegpt_8k_lengths.csv.gz", "lengths",
                    "ShareGPT 8k request lengths (Llama-2 tokenizer), microsoft/sarathi-serve, Apache-2.0"),
    "arxiv_summarization": ("arxiv_summarization_lengths.csv.gz", "lengths",
                            "arXiv summarization request lengths (Llama-2 tokenizer), microsoft/vidur, MIT"),
}

CHUNK_ROWS = 1_000_000   # CSV rows parsed per pandas chunk: bounds the memory spent on text
MAX_TOKENS = 2**31 - 1   # a larger token count is a corrupt field (and would overflow sums of counts)
MAX_TIME_S = 9.2e9       # arrivals are int64 nanoseconds: |t| must stay below ~292 years
_UINT = re.compile(r"\s*\d+\s*")
Opener = Callable[[], IO[bytes]]


@dataclass
class _Columns:
    """What a reader collected, in file order: arrival in int64 ns, counts, optional hashes."""

    time_ns: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    hashes: np.ndarray | None = None
    offsets: np.ndarray | None = None


# --------------------------------------------------------------------------- opening files

def _binary(opener: Opener) -> IO[bytes]:
    """Open as bytes, gunzipping when the file starts with the gzip magic bytes."""
    raw = io.BufferedReader(opener())
    return gzip.GzipFile(fileobj=raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw


def _text(opener: Opener) -> IO[str]:
    """Open as UTF-8 text (a UTF-8 byte-order mark is dropped), gunzipping gzip files."""
    return io.TextIOWrapper(_binary(opener), encoding="utf-8-sig", newline="")


_GZIP_ERRORS = (OSError, EOFError, zlib.error)
_DECODE_ERRORS = (*_GZIP_ERRORS, UnicodeDecodeError)


def _unreadable(opener: Opener, name: str, error: Exception) -> WorkloadError:
    """Where a file stops being (gzipped) UTF-8 text: the line of the first bad byte, or the line
    the gzip stream breaks in, found by reading the bytes again."""
    lines = 0
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    try:
        with _binary(opener) as stream:
            while chunk := stream.read(1 << 16):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as e:
                    line = lines + e.object[:e.start].count(b"\n") + 1
                    utf16 = " (it starts with a UTF-16 byte-order mark)" if e.object[:2] in (b"\xff\xfe", b"\xfe\xff") \
                        and lines == 0 else ""
                    return WorkloadError(f"{name} line {line}: not UTF-8 text{utf16}: byte 0x{e.object[e.start]:02x} "
                                         "cannot be decoded; save the file as UTF-8")
                lines += chunk.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return WorkloadError(f"{name} line {lines + 1}: not UTF-8 text: the file ends inside a multi-byte character")
    except _GZIP_ERRORS as e:
        return WorkloadError(f"{name} line {lines + 1}: the gzip stream breaks after {lines} lines ({e}); the file is "
                             "truncated or corrupt")
    return WorkloadError(f"{name} line {lines + 1}: cannot read as (gzipped) UTF-8 text: {error}")


# --------------------------------------------------------------------------- field checks

def _expected(fmt: TraceFormat, field: str) -> str:
    if field == fmt.time:
        return {"datetime": f"expected a timestamp like '{fmt.time_example}'",
                "s": "expected a number of seconds", "ms": "expected a number of milliseconds"}[fmt.time_unit]
    if field == fmt.hashes:
        return "expected a list of integer block hashes"
    return f"expected a non-negative integer up to {MAX_TOKENS}"


def _seconds_ok(value: float | int, fmt: TraceFormat) -> bool:
    """A finite arrival time that int64 nanoseconds can hold."""
    try:
        value = float(value)
    except OverflowError:   # an int beyond float's range
        return False
    return math.isfinite(value) and abs(value) * (1e-3 if fmt.time_unit == "ms" else 1.0) <= MAX_TIME_S


def _bad_field(fmt: TraceFormat, field: str, value: str) -> bool:
    """Whether a CSV cell cannot be parsed as this format's field (the slow, exact check)."""
    if field == fmt.time and fmt.time_unit == "datetime":
        try:   # as a Series, as the fast path parses it (the scalar parser is laxer)
            return bool(pd.to_datetime(pd.Series([value]), format="ISO8601", utc=True).isna().any())
        except (ValueError, OverflowError):
            return True
    if field == fmt.time:
        try:
            return not _seconds_ok(value, fmt)
        except ValueError:
            return True
    if field in (fmt.prompt, fmt.output):
        return not _UINT.fullmatch(value) or int(value) > MAX_TOKENS
    return False


def _check_header(fmt: TraceFormat, header: list[str], name: str, line: int) -> None:
    found = ",".join(header)
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:
        raise WorkloadError(f"{name} line {line}: duplicate column(s) {', '.join(map(repr, twice))} in the header "
                            f"'{found}'; each column may appear once")
    missing = [c for c in fmt.required if c not in header]
    if missing:
        raise WorkloadError(f"{name} line {line}: header lacks field(s) {', '.join(map(repr, missing))}; "
                            f"expected the header '{','.join(fmt.required)}' ({fmt.name} format), found '{found}'")
    unknown = [c for c in header if c not in fmt.known]
    if unknown:
        raise WorkloadError(f"{name} line {line}: unknown column(s) {', '.join(map(repr, unknown))} for the "
                            f"{fmt.name} format, whose columns are {', '.join(fmt.known)}; pick the format "
                            "that matches the file (workload.format) or remove the column(s)")


# --------------------------------------------------------------------------- CSV

def _csv_rows(opener: Opener, name: str) -> Iterator[tuple[int, int, list[str]]]:
    """(first and last physical line, fields) of every non-blank CSV record, numbered as in an
    editor (a quoted field may span lines)."""
    with _text(opener) as f:
        reader = csv.reader(f)
        last = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise WorkloadError(f"{name} line {last + 1}: not a readable CSV line ({e})") from None
            first, last = last + 1, reader.line_num
            if any(cell.strip() for cell in row):
                yield first, last, [cell.strip() for cell in row]


def _csv_header(fmt: TraceFormat, opener: Opener, name: str) -> int:
    """Check the header row; return its line number."""
    for line, _, header in _csv_rows(opener, name):
        _check_header(fmt, header, name, line)
        return line
    raise WorkloadError(f"{name} line 1: file is empty, expected the header '{','.join(fmt.required)}' "
                        f"({fmt.name} format)")


def _locate_csv_error(fmt: TraceFormat, opener: Opener, name: str) -> WorkloadError | None:
    """Scan line by line for the first problem the fast parser tripped on; None if none."""
    rows = _csv_rows(opener, name)
    _, _, header = next(rows)
    for line, last, row in rows:
        if len(row) != len(header):
            what = (f"field '{header[len(row)]}' is missing" if len(row) < len(header)
                    else f"extra field(s) after '{header[-1]}'")
            spans = f" (a quoted field runs on to line {last}: is a quote left open?)" if last > line else ""
            return WorkloadError(f"{name} line {line}: {what}; found {len(row)} fields, expected "
                                 f"{len(header)} ({','.join(header)}){spans}")
        for field in fmt.required:
            value = row[header.index(field)]
            if _bad_field(fmt, field, value):
                return WorkloadError(f"{name} line {line}: field '{field}' is '{value}', {_expected(fmt, field)}")
    return None


def _time_ns(fmt: TraceFormat, values: pd.Series) -> np.ndarray:
    """Arrival column -> int64 ns; raises ValueError on anything unparsable or non-finite."""
    if fmt.time_unit == "datetime":
        stamps = pd.to_datetime(values, format="ISO8601", utc=True)
        if stamps.isna().any():
            raise ValueError("missing timestamp")
        return stamps.dt.as_unit("ns").to_numpy(np.int64)
    seconds = values.to_numpy(np.float64) * (1e-3 if fmt.time_unit == "ms" else 1.0)
    if not (np.abs(seconds) <= MAX_TIME_S).all():   # also false for NaN
        raise ValueError("non-finite or out-of-range time")
    return np.rint(seconds * 1e9).astype(np.int64)


def _read_csv(fmt: TraceFormat, opener: Opener, name: str, chunk_rows: int) -> _Columns:
    header_line = _csv_header(fmt, opener, name)
    counts = {fmt.prompt: np.int64, fmt.output: np.int64}
    dtypes = {**counts, **({fmt.time: str} if fmt.time else {})}
    times, prompts, outputs = [], [], []
    try:  # fast path: pandas parses each chunk in C (all columns: usecols would hide extra fields)
        with _text(opener) as f:
            for chunk in pd.read_csv(f, dtype=dtypes, keep_default_na=False,
                                     skipinitialspace=True, chunksize=chunk_rows):
                chunk.columns = [c.strip() for c in chunk.columns]
                tokens = chunk[[fmt.prompt, fmt.output]].to_numpy(np.int64)
                if (tokens < 0).any() or (tokens > MAX_TOKENS).any():
                    raise ValueError("token count out of range")
                if fmt.time:
                    times.append(_time_ns(fmt, chunk[fmt.time]))
                prompts.append(tokens[:, 0])
                outputs.append(tokens[:, 1])
    except _DECODE_ERRORS:
        raise   # read_trace words it
    except (ValueError, TypeError, OverflowError, pd.errors.ParserError) as e:  # find the exact line; pandas' last
        raise _locate_csv_error(fmt, opener, name) or WorkloadError(f"{name}: cannot parse: {e}") from None
    if not prompts or sum(len(p) for p in prompts) == 0:
        raise WorkloadError(f"{name} line {header_line}: header only, the file has no requests")
    prompt, output = np.concatenate(prompts), np.concatenate(outputs)
    return _Columns(np.concatenate(times) if fmt.time else np.zeros(len(prompt), np.int64), prompt, output)


# --------------------------------------------------------------------------- JSONL

def _json_count(value, name: str, line: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise WorkloadError(f"{name} line {line}: field '{field}' is {json.dumps(value)[:60]}, "
                            f"expected a non-negative integer up to {MAX_TOKENS}")
    return value


def _json_time_ns(fmt: TraceFormat, value, name: str, line: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _seconds_ok(value, fmt):
        raise WorkloadError(f"{name} line {line}: field '{fmt.time}' is {json.dumps(value)[:60]}, "
                            f"{_expected(fmt, fmt.time)} within ±{MAX_TIME_S:.2g} s")
    return round(value * (1_000_000 if fmt.time_unit == "ms" else 1_000_000_000))


def _read_jsonl(fmt: TraceFormat, opener: Opener, name: str) -> _Columns:
    """One JSON object per line; blank lines are skipped but counted in line numbers."""
    times, prompts, outputs = array("q"), array("q"), array("q")
    hashes, offsets = array("q"), array("q", [0])
    required, known = set(fmt.required), set(fmt.known)
    time, prompt, output, hash_field = fmt.time, fmt.prompt, fmt.output, fmt.hashes
    with _text(opener) as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise WorkloadError(f"{name} line {line}: not valid JSON ({e.msg} at column {e.colno})") from None
            except (ValueError, RecursionError) as e:   # a number of > 4300 digits; nesting deeper than ~1000
                raise WorkloadError(f"{name} line {line}: not a JSON line this reader takes ({e})") from None
            if not isinstance(row, dict):
                raise WorkloadError(f"{name} line {line}: expected a JSON object with fields "
                                    f"{', '.join(fmt.required)}, found {type(row).__name__}")
            if not required <= row.keys() <= known:
                missing = [c for c in fmt.required if c not in row]
                unknown = [c for c in row if c not in known]
                what = (f"field '{missing[0]}' is missing" if missing else
                        f"unknown field(s) {', '.join(map(repr, unknown))}")
                raise WorkloadError(f"{name} line {line}: {what}; {fmt.name} lines have the fields "
                                    f"{', '.join(fmt.known)}")
            times.append(_json_time_ns(fmt, row[time], name, line))
            prompts.append(_json_count(row[prompt], name, line, prompt))
            outputs.append(_json_count(row[output], name, line, output))
            if hash_field:
                blocks = row[hash_field]
                try:   # array('q') refuses non-integers and overflow itself, faster than a check per item
                    hashes.extend(blocks if isinstance(blocks, list) else None)
                except (TypeError, OverflowError):
                    raise WorkloadError(f"{name} line {line}: field '{fmt.hashes}' is "
                                        f"{json.dumps(blocks)[:60]}, {_expected(fmt, fmt.hashes)}") from None
                offsets.append(len(hashes))
    if not prompts:
        raise WorkloadError(f"{name} line 1: file is empty, expected one JSON object per line with the "
                            f"fields {', '.join(fmt.required)} ({fmt.name} format)")
    as_np = functools.partial(np.frombuffer, dtype=np.int64)
    return _Columns(as_np(times), as_np(prompts), as_np(outputs),
                    as_np(hashes) if fmt.hashes else None, as_np(offsets) if fmt.hashes else None)


# --------------------------------------------------------------------------- assembling

def _workload(fmt: TraceFormat, cols: _Columns, name: str, label: str) -> Workload:
    """Skip or clamp zero counts, sort by time, shift to 0; notes say what changed."""
    notes = []
    rows = np.arange(len(cols.prompt))
    zero = (cols.prompt == 0) | (cols.output == 0)
    if fmt.zero_rows == "skip" and zero.any():
        notes.append(f"{int(zero.sum())} rows with zero tokens skipped")
        rows = rows[~zero]
        if len(rows) == 0:
            raise WorkloadError(f"{name}: every row has zero tokens, no request left")
    elif zero.any():
        zeros = int((cols.prompt == 0).sum() + (cols.output == 0).sum())
        notes.append(f"{zeros} zero token counts clamped to 1")
    time_ns = cols.time_ns[rows]
    backwards = int((np.diff(time_ns) < 0).sum())
    if backwards:
        notes.append(f"rows re-sorted by timestamp ({backwards} out of order)")
    if fmt.time is None:
        notes.append("no arrival times (lengths only)")
    order = rows[np.argsort(time_ns, kind="stable")]
    prompt, output = cols.prompt[order], cols.output[order]
    np.maximum(prompt, 1, out=prompt)   # in place: a 10-million-row trace should not hold extra copies
    np.maximum(output, 1, out=output)
    hashes = offsets = None
    if cols.hashes is not None:
        hashes, offsets = gather_blocks(cols.hashes, cols.offsets, order, -(-prompt // fmt.block_tokens))
    time_ns = cols.time_ns[order]
    return Workload(name, (time_ns - time_ns[0]) / 1e9, prompt, output, ", ".join([label, *notes]),
                    hashes, offsets, fmt.block_tokens if hashes is not None else None)


def read_trace(opener: Opener, name: str, fmt_name: str, label: str, chunk_rows: int = CHUNK_ROWS) -> Workload:
    """Parse one trace file (`opener` returns a fresh binary stream each call; `name` is how
    messages refer to it) into a Workload named `name` whose source starts with `label`."""
    if fmt_name not in FORMATS:
        raise WorkloadError(f"unknown trace format {fmt_name!r}; supported: {', '.join(FORMATS)}")
    fmt = FORMATS[fmt_name]
    try:
        cols = (_read_csv(fmt, opener, name, chunk_rows) if fmt.container == "csv"
                else _read_jsonl(fmt, opener, name))
    except _DECODE_ERRORS as e:
        raise _unreadable(opener, name, e) from None
    return _workload(fmt, cols, name, label)


def _resolve_path(path: str) -> Path:
    """User paths are relative to the directory the run was launched from (Hydra-aware)."""
    from hydra.utils import to_absolute_path  # lazy: only user files need it
    return Path(to_absolute_path(str(path)))


def load_trace(bundled: str | None = None, path: str | None = None, fmt: str | None = None,
               chunk_rows: int = CHUNK_ROWS) -> Workload:
    """Load a trace from a user `path` (wins if given; `fmt` defaults to azure2023) or a
    `bundled` name (see BUNDLED; `fmt` defaults to its own). Bundled traces are parsed once
    and shared (the arrays are read-only)."""
    fmt = trace_format(bundled, path, fmt).name
    if path is None:
        return _bundled_trace(bundled, fmt)
    p = _resolve_path(path)
    if not p.is_file():
        raise WorkloadError(f"trace file '{p}' cannot be read (no such file); set the path to an "
                            "existing file, or workload.path to null to use the bundled trace")
    return read_trace(lambda: open(p, "rb"), str(p), fmt, f"trace file {p} ({fmt} format)", chunk_rows)


def trace_format(bundled: str | None = None, path: str | None = None, fmt: str | None = None) -> TraceFormat:
    """The format load_trace will read: `fmt`, else the bundled trace's own, else azure2023."""
    if path is None and bundled not in BUNDLED:
        raise WorkloadError(f"unknown bundled trace {bundled!r}; choose one of {sorted(BUNDLED)} "
                            "or give a file path")
    fmt = fmt or (BUNDLED[bundled][1] if path is None else "azure2023")
    if fmt not in FORMATS:
        raise WorkloadError(f"unknown trace format {fmt!r}; supported: {', '.join(FORMATS)}")
    return FORMATS[fmt]


@functools.lru_cache(maxsize=None)
def _bundled_trace(bundled: str, fmt: str) -> Workload:
    file, _, label = BUNDLED[bundled]
    resource = resources.files("sim") / "data" / file
    return read_trace(lambda: resource.open("rb"), file, fmt, label)
