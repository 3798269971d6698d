"""Fuzzing the trace readers (sim/traces.py): malformed files must give a `WorkloadError` that
names the file and the line (and the field, where one is at fault), never another exception.

* The committed corpus (tests/fuzz_corpus/<format>/, written by make_corpus.py): truncated
  lines, wrong types, huge numbers, NaN/inf, wrong encodings, empty and header-only files,
  binary garbage, broken gzip, bad headers. `expected.json` says, per file, what loading it
  gives: success, or the error's line, field and a phrase of its message.
* Hypothesis mutates each format's valid file (byte flips, truncation, duplicated, dropped or
  swapped lines, inserted bytes), derandomized and bounded so that the run is quick and the
  same every time.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.traces import FORMATS, load_trace, read_trace
from sim.workload import Workload, WorkloadError

CORPUS = Path(__file__).resolve().parent / "fuzz_corpus"
EXPECTED: dict[str, dict] = json.loads((CORPUS / "expected.json").read_text())
# errors about the file as a whole rather than one line of it
WHOLE_FILE = ("every row has zero tokens",)


def load(path: Path, fmt: str) -> Workload:
    return load_trace(path=str(path), fmt=fmt)


def test_the_corpus_is_complete():
    on_disk = {f"{p.parent.name}/{p.name}" for p in CORPUS.glob("*/*")}
    assert on_disk == set(EXPECTED)
    assert {p.split("/")[0] for p in EXPECTED} == set(FORMATS)


@pytest.mark.parametrize("entry", sorted(EXPECTED))
def test_a_corpus_file_loads_or_fails_naming_file_line_and_field(entry):
    fmt = entry.split("/")[0]
    path = CORPUS / entry
    expected = EXPECTED[entry]
    if expected.get("ok"):
        workload = load(path, fmt)
        assert len(workload) >= 1
        return
    with pytest.raises(WorkloadError) as caught:
        load(path, fmt)
    message = str(caught.value)
    assert type(caught.value) is WorkloadError
    assert message.startswith(f"{path} line "), message
    if expected["line"] == "any":
        assert re.match(rf"{re.escape(str(path))} line \d+: ", message), message
    elif expected["line"] is not None:
        assert message.startswith(f"{path} line {expected['line']}: "), message
    if expected["field"]:
        assert f"'{expected['field']}'" in message, message
    assert expected["says"] in message, message
    assert "Traceback" not in message and len(message) < 1000


# --------------------------------------------------------------------------- mutations

def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


MUTATIONS = {
    "flip": lambda data, i, b: data[:i] + bytes([data[i] ^ (b or 1)]) + data[i + 1:] if data else data,
    "truncate": lambda data, i, b: data[:i],
    "insert": lambda data, i, b: data[:i] + bytes([b]) + data[i:],
    "duplicate_line": lambda data, i, b: b"".join(_lines(data)[:i % 5 + 1] + _lines(data)[i % 5:]),
    "drop_line": lambda data, i, b: b"".join(line for k, line in enumerate(_lines(data)) if k != i % 5),
    "swap_lines": lambda data, i, b: b"".join(sorted(_lines(data), key=lambda line: (line * 3)[b % max(len(line), 1):])),
}


def valid_file(fmt: str) -> bytes:
    return (CORPUS / fmt / ("valid.csv" if FORMATS[fmt].container == "csv" else "valid.jsonl")).read_bytes()


def check_loads_or_says_where(data: bytes, fmt: str) -> None:
    name = f"mutant.{FORMATS[fmt].container}"
    try:
        workload = read_trace(lambda: io.BytesIO(data), name, fmt, "fuzz")
    except WorkloadError as error:
        message = str(error)
        assert re.match(rf"{re.escape(name)} line \d+: ", message) or \
            (message.startswith(name) and any(w in message for w in WHOLE_FILE)), message
        return
    assert len(workload) >= 1 and workload.arrival_s[0] == 0.0


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(st.sampled_from(sorted(MUTATIONS)), st.integers(0, 400), st.integers(0, 255)),
                      min_size=1, max_size=4))
def test_mutated_valid_files_load_or_fail_naming_the_line(fmt, steps):
    data = valid_file(fmt) * 3
    for mutation, at, byte in steps:
        data = MUTATIONS[mutation](data, min(at, max(len(data) - 1, 0)), byte)
    check_loads_or_says_where(data, fmt)
