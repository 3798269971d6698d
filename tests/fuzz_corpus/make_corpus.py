"""Writes the fuzz corpus of the trace readers (tests/test_trace_fuzz.py): one folder per format
of sim/traces.py, each file a malformed (or oddly formed but valid) trace, and `expected.json`,
which says for each file what loading it must give, decided by hand here, not by running the
readers: `{"ok": true}`, or `{"line": N or null, "field": NAME or null, "says": TEXT}`, the
WorkloadError's line (null: a whole-file problem), the field it names and a phrase it contains.

    python tests/fuzz_corpus/make_corpus.py      # rewrites the corpus next to this file
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

CSV_FORMATS = {   # format -> (header fields, a valid row, time field, prompt field, output field, time kind)
    "azure2023": (["TIMESTAMP", "ContextTokens", "GeneratedTokens"], ["2023-11-16 18:15:46.6805900", "374", "44"],
                  "TIMESTAMP", "ContextTokens", "GeneratedTokens", "datetime"),
    "azure2024": (["TIMESTAMP", "ContextTokens", "GeneratedTokens"], ["2024-05-10 00:00:00.009930+00:00", "374", "44"],
                  "TIMESTAMP", "ContextTokens", "GeneratedTokens", "datetime"),
    "burstgpt": (["Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type"],
                 ["5", "ChatGPT", "472", "18", "490", "Conversation log"],
                 "Timestamp", "Request tokens", "Response tokens", "s"),
    "csv": (["arrival_s", "prompt_tokens", "output_tokens"], ["0.5", "100", "20"],
            "arrival_s", "prompt_tokens", "output_tokens", "s"),
    "lengths": (["num_prefill_tokens", "num_decode_tokens"], ["100", "20"],
                None, "num_prefill_tokens", "num_decode_tokens", None),
}
JSONL_FORMATS = {   # format -> (a valid object, time field, prompt field, output field, hash field)
    "mooncake": ({"timestamp": 0, "input_length": 1000, "output_length": 20, "hash_ids": [0, 1]},
                 "timestamp", "input_length", "output_length", "hash_ids"),
    "jsonl": ({"arrival_s": 0.5, "prompt_tokens": 100, "output_tokens": 20},
              "arrival_s", "prompt_tokens", "output_tokens", None),
}
HUGE = str(2**70)


def ok() -> dict:
    return {"ok": True}


def error(line: int | None, says: str, field: str | None = None) -> dict:
    return {"line": line, "field": field, "says": says}


def csv_cases(fields, row, time, prompt, output, kind) -> dict[str, tuple[bytes, dict]]:
    def text(*rows: list[str] | str, end: str = "\n") -> bytes:
        lines = [r if isinstance(r, str) else ",".join(r) for r in rows]
        return (end.join(lines) + end).encode()

    def with_value(field: str, value: str) -> list[str]:
        changed = list(row)
        changed[fields.index(field)] = value
        return changed

    good = ",".join(row)
    cases = {
        "empty.csv": (b"", error(1, "empty")),
        "blank_lines_only.csv": (b"\n  \n\n", error(1, "empty")),
        "header_only.csv": (text(fields), error(1, "header only")),
        "valid.csv": (text(fields, row, row, row), ok()),
        "crlf_line_ends.csv": (text(fields, row, row, end="\r\n"), ok()),
        "utf8_bom.csv": (b"\xef\xbb\xbf" + text(fields, row), ok()),
        "no_final_newline.csv": (text(fields, row)[:-1], ok()),
        # a field the format reads past (BurstGPT's Log Type) may be cut off: the fields used are whole
        "truncated_last_field.csv": (text(fields, row, row, row[:-1]),
                                     error(4, "is missing", fields[-1]) if fields[-1] in (time, prompt, output) else ok()),
        # cut one character into the prompt count, no final newline
        "truncated_mid_line.csv": (text(fields, row, ",".join(row[:fields.index(prompt)] + [row[fields.index(prompt)][0]]))[:-1],
                                   error(3, "is missing", output)),
        "extra_field.csv": (text(fields, row, row + ["7"]), error(3, "extra field")),
        "header_wrong_case.csv": (text([f.upper() if f != f.upper() else f.lower() for f in fields], row),
                                  error(1, "header lacks")),
        "header_missing_column.csv": (text([f for f in fields if f != output],
                                           [v for f, v in zip(fields, row) if f != output]), error(1, "header lacks")),
        "header_unknown_column.csv": (text(fields + ["user"], row + ["u1"]), error(1, "unknown column")),
        "header_duplicate_column.csv": (text(fields + [prompt], row + ["5"]), error(1, "duplicate column")),
        "utf16.csv": (("\n".join([",".join(fields), good]) + "\n").encode("utf-16"), error(1, "UTF-8")),
        "latin1_byte.csv": (text(fields, row) + ",".join(row[:-1]).encode() + b",4\xe9\n",
                            error(3, "UTF-8")),
        "binary_garbage.csv": (random.Random(0).randbytes(600), error("any", "")),
        "nul_byte.csv": (text(fields, row) + good.encode().replace(b",", b"\x00,", 1) + b"\n",
                         error(3, "", fields[0])),
        "gzip_truncated.csv.gz": (gzip.compress(text(fields, *[row] * 4000), mtime=0)[:-12], error("any", "gzip")),
        "gzip_corrupt.csv.gz": (_corrupt(gzip.compress(text(fields, *[row] * 4000), mtime=0)), error("any", "gzip")),
        "unterminated_quote.csv": (text(fields, row, '"' + good, row), error(3, "", None)),
        "bad_row_far_down.csv": (text(fields, *[row] * 1500, with_value(output, "x"), row), error(1502, "", output)),
    }
    if fields[0] == "arrival_s":   # one is enough: a field longer than the csv module's limit (131,072)
        cases["huge_field.csv"] = (text(fields, row, with_value(prompt, "9" * 140_000)), error(3, "field limit"))
    for name, field, value in [("prompt_word", prompt, "abc"), ("prompt_float", prompt, "12.5"),
                               ("prompt_empty", prompt, ""), ("prompt_huge_int", prompt, HUGE),
                               ("prompt_1e400", prompt, "1e400"), ("prompt_nan", prompt, "nan"),
                               ("output_negative", output, "-5"), ("output_inf", output, "inf"),
                               ("output_int64_max", output, str(2**63 - 1))]:
        cases[f"{name}.csv"] = (text(fields, row, with_value(field, value), row), error(3, "", field))
    if time is None:
        return cases
    cases["non_monotonic.csv"] = (text(fields, row, with_value(time, _earlier(row[0], kind)), row), ok())
    bad_times = [("time_word", "yesterday"), ("time_empty", "")]
    if kind == "datetime":
        bad_times += [("time_month_13", "2023-13-45 25:61:00"), ("time_year_99999", "99999-01-01 00:00:00")]
    else:
        bad_times += [("time_nan", "nan"), ("time_inf", "inf"), ("time_1e400", "1e400"), ("time_1e300", "1e300"),
                      ("time_huge_int", HUGE)]
        cases["time_negative.csv"] = (text(fields, with_value(time, "-5"), row), ok())
    for name, value in bad_times:
        cases[f"{name}.csv"] = (text(fields, row, with_value(time, value), row), error(3, "", time))
    return cases


def jsonl_cases(obj, time, prompt, output, hashes) -> dict[str, tuple[bytes, dict]]:
    def text(*rows) -> bytes:
        return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()

    good = json.dumps(obj)
    cases = {
        "empty.jsonl": (b"", error(1, "empty")),
        "blank_lines_only.jsonl": (b"\n \n\n", error(1, "empty")),
        "valid.jsonl": (text(obj, obj, obj), ok()),
        "crlf_line_ends.jsonl": (text(obj, obj).replace(b"\n", b"\r\n"), ok()),
        "utf8_bom.jsonl": (b"\xef\xbb\xbf" + text(obj), ok()),
        "duplicate_key.jsonl": (text(obj, good[:-1] + f', "{prompt}": 7}}'), ok()),
        "truncated_last_line.jsonl": (text(obj, obj, obj) + good[: len(good) // 2].encode(), error(4, "not valid JSON")),
        "trailing_garbage.jsonl": (text(obj, good + " x"), error(2, "not valid JSON")),
        "top_level_array.jsonl": (text(obj, [0, 10, 5]), error(2, "JSON object")),
        "top_level_number.jsonl": (text(obj, "12"), error(2, "JSON object")),
        "deep_nesting.jsonl": (text(obj, "[" * 5000 + "]" * 5000), error(2, "")),
        "missing_field.jsonl": (text(obj, {k: v for k, v in obj.items() if k != output}),
                                error(2, "is missing", output)),
        "unknown_field.jsonl": (text(obj, obj | {"user": 3}), error(2, "unknown field")),
        "utf16.jsonl": (text(obj).decode().encode("utf-16"), error(1, "UTF-8")),
        "latin1_byte.jsonl": (text(obj, obj) + good.replace("{", '{"x\xe9": 1, ', 1).encode("latin-1") + b"\n",
                              error(3, "UTF-8")),
        "binary_garbage.jsonl": (random.Random(1).randbytes(600), error("any", "")),
        "nul_byte.jsonl": (text(obj) + good.encode().replace(b",", b"\x00,", 1) + b"\n", error(2, "not valid JSON")),
        "gzip_truncated.jsonl.gz": (gzip.compress(text(*[obj] * 4000), mtime=0)[:-12], error("any", "gzip")),
        "gzip_corrupt.jsonl.gz": (_corrupt(gzip.compress(text(*[obj] * 4000), mtime=0)), error("any", "gzip")),
        "non_monotonic.jsonl": (text(obj | {time: 100}, obj | {time: 5}, obj), ok()),
        "time_negative.jsonl": (text(obj | {time: -5}, obj), ok()),
        "bad_line_far_down.jsonl": (text(*[obj] * 1500, obj | {output: "x"}, obj), error(1501, "", output)),
    }
    raw = {"time_nan": (time, "NaN"), "time_infinity": (time, "Infinity"), "time_1e400": (time, "1e400"),
           "time_1e300": (time, "1e300"), "time_huge_int": (time, HUGE), "time_string": (time, '"0"'),
           "time_null": (time, "null"), "time_bool": (time, "true"),
           "prompt_string": (prompt, '"12"'), "prompt_float": (prompt, "12.5"), "prompt_bool": (prompt, "true"),
           "prompt_null": (prompt, "null"), "prompt_huge_int": (prompt, HUGE), "prompt_1e400": (prompt, "1e400"),
           "prompt_list": (prompt, "[12]"), "output_negative": (output, "-5"),
           "output_int64_max": (output, str(2**63 - 1))}
    if hashes:
        raw |= {"hashes_string": (hashes, '"0,1"'), "hashes_floats": (hashes, "[0.5, 1]"),
                "hashes_huge_int": (hashes, f"[{HUGE}]"), "hashes_nested": (hashes, "[[0], [1]]"),
                "hashes_null": (hashes, "null")}
        cases["hashes_negative.jsonl"] = (text(obj, obj | {hashes: [-1, -2]}), ok())
        cases["hashes_fewer_than_blocks.jsonl"] = (text(obj, obj | {hashes: []}), ok())
    for name, (field, value) in raw.items():
        line = good.replace(f'"{field}": {json.dumps(obj[field])}', f'"{field}": {value}')
        assert line != good
        cases[f"{name}.jsonl"] = (text(obj, line, obj), error(2, "", field))
    return cases


def _earlier(value: str, kind: str) -> str:
    return "2000-01-01 00:00:00" + value[19:] if kind == "datetime" else "-100"


def _corrupt(data: bytes) -> bytes:
    """Flip bytes inside the deflate stream (the gzip header and trailer stay well formed)."""
    middle = bytearray(data)
    for i in range(len(middle) // 3, len(middle) // 3 + 8):
        middle[i] ^= 0x5A
    return bytes(middle)


def main() -> None:
    expected = {}
    for fmt, spec in CSV_FORMATS.items():
        for name, (data, outcome) in csv_cases(*spec).items():
            expected[f"{fmt}/{name}"] = outcome
            (HERE / fmt).mkdir(exist_ok=True)
            (HERE / fmt / name).write_bytes(data)
    for fmt, spec in JSONL_FORMATS.items():
        for name, (data, outcome) in jsonl_cases(*spec).items():
            expected[f"{fmt}/{name}"] = outcome
            (HERE / fmt).mkdir(exist_ok=True)
            (HERE / fmt / name).write_bytes(data)
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{len(expected)} files")


if __name__ == "__main__":
    main()
