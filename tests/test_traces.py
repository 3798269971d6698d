"""Trace formats (sim/traces.py): each format on real rows, and malformed input of each kind."""

from __future__ import annotations

import gzip
import hashlib
import json
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from sim.traces import BUNDLED, load_trace, read_trace
from sim.workload import WorkloadError, build_workload

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "traces"


def bundled_bytes(name: str) -> bytes:
    return gzip.decompress((resources.files("sim") / "data" / BUNDLED[name][0]).read_bytes())


def write(tmp_path: Path, name: str, lines: list[str], gz: bool = False) -> str:
    data = ("\n".join(lines) + "\n").encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def trace(path: str, fmt: str, **shaping) -> dict:
    return {"name": "t", "kind": "trace", "path": path, "format": fmt, **shaping}


# --------------------------------------------------------------------------- Mooncake

def test_mooncake_conversation_is_the_published_trace():
    raw = bundled_bytes("mooncake_conversation")
    assert hashlib.sha256(raw).hexdigest() == "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df"
    rows = [json.loads(line) for line in raw.decode().splitlines()]
    w = load_trace("mooncake_conversation")
    assert len(w) == 12_031 and w.prefix_block_tokens == 512
    assert w.prompt_tokens.mean() == pytest.approx(12_035, abs=1)
    assert w.output_tokens.mean() == pytest.approx(343, abs=1)
    assert list(w.blocks_of(1)) == [0, *range(14, 28)]                    # row 2 of the file
    assert [list(w.blocks_of(i)) for i in (0, 5000, 12_030)] == [rows[i]["hash_ids"] for i in (0, 5000, 12_030)]
    assert np.array_equal(w.block_counts(), -(-w.prompt_tokens // 512))  # one hash per 512-token block
    assert np.array_equal(np.rint(w.arrival_s * 1000), [r["timestamp"] for r in rows])   # as is: ms / 1000
    assert "Apache-2.0" in w.source and w.prefix_block_hashes.dtype == np.int64


def test_mooncake_synthetic_is_the_published_trace():
    w = load_trace("mooncake_synthetic")
    assert len(w) == 3_993 and w.duration_s == pytest.approx(1022.025)
    assert w.prompt_tokens.mean() == pytest.approx(15_325, abs=1)
    assert w.output_tokens.mean() == pytest.approx(149, abs=1)


def test_mooncake_buckets_as_is_and_spread():
    as_is = build_workload({"name": "m", "kind": "trace", "bundled": "mooncake_conversation"}, seed=0)
    assert np.mean(np.diff(as_is.arrival_s) == 0) > 0.85                 # ~3 s buckets: most gaps are 0
    cfg = {"name": "m", "kind": "trace", "bundled": "mooncake_conversation", "timestamps": "spread"}
    spread, again, other = (build_workload(cfg, seed=s) for s in (0, 0, 1))
    assert np.array_equal(spread.arrival_s, again.arrival_s)
    assert not np.array_equal(spread.arrival_s, other.arrival_s)
    assert np.mean(np.diff(spread.arrival_s) == 0) < 0.01
    # every request moves within its ~3 s bucket (up to the common shift back to 0), file order kept
    moved = spread.arrival_s - as_is.arrival_s
    assert moved.max() - moved.min() < 3.004 and np.all(np.diff(spread.arrival_s) >= 0)
    assert np.array_equal(spread.prefix_block_hashes, as_is.prefix_block_hashes)
    assert np.array_equal(spread.prompt_tokens, as_is.prompt_tokens)
    assert "spread" in spread.source


@pytest.mark.parametrize("line, message", [
    ('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [0]', "not valid JSON"),
    ('[0, 10, 5]', "expected a JSON object"),
    ('{"timestamp": 0, "input_length": 10, "hash_ids": [0]}', "field 'output_length' is missing"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [0], "user": 3}',
     "unknown field\\(s\\) 'user'"),
    ('{"timestamp": 0, "input_length": -10, "output_length": 5, "hash_ids": [0]}',
     "field 'input_length' is -10, expected a non-negative integer"),
    ('{"timestamp": "soon", "input_length": 10, "output_length": 5, "hash_ids": [0]}',
     "field 'timestamp' is \"soon\", expected a number of milliseconds"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": [0.5]}', "field 'hash_ids' is \\[0.5\\]"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 5, "hash_ids": 7}', "field 'hash_ids' is 7"),
])
def test_malformed_mooncake_line_names_file_line_and_field(tmp_path, line, message):
    good = bundled_bytes("mooncake_conversation").decode().splitlines()[:3]
    path = write(tmp_path, "mc.jsonl.gz", [good[0], "", good[1], line, good[2]], gz=True)   # bad line is 4
    with pytest.raises(WorkloadError, match=f"mc.jsonl.gz line 4: {message}"):
        load_trace(path=path, fmt="mooncake")


def test_empty_jsonl(tmp_path):
    with pytest.raises(WorkloadError, match="e.jsonl line 1: file is empty.*timestamp, input_length"):
        load_trace(path=write(tmp_path, "e.jsonl", [""]), fmt="mooncake")


# --------------------------------------------------------------------------- Azure 2024

AZURE_2024 = [  # rows in the published 2024 layout: zone offset, 6, 7, 1 or no sub-second digits
    "TIMESTAMP,ContextTokens,GeneratedTokens",
    "2024-05-10 00:00:00.009930+00:00,2162,5",
    "2024-05-10 00:00:00.0525+00:00,4316,5",
    "2024-05-10 00:00:01+00:00,1224,220",
    "2024-05-10 00:00:01.1234567+00:00,312,13",
    "2024-05-10 02:00:02.5+02:00,88,0",                                  # = 00:00:02.5 UTC
]


def test_azure2024_zone_offsets_and_mixed_fractions(tmp_path):
    w = build_workload(trace(write(tmp_path, "week.csv", AZURE_2024), "azure2024"), seed=0)
    assert np.allclose(w.arrival_s, [0.0, 0.04257, 0.99007, 1.1135267, 2.49007], atol=1e-9, rtol=0)
    assert w.arrival_s[3] - w.arrival_s[2] == pytest.approx(0.1234567, abs=1e-12)   # 100 ns kept
    assert list(w.prompt_tokens) == [2162, 4316, 1224, 312, 88]
    assert list(w.output_tokens) == [5, 5, 220, 13, 1] and "1 zero token counts clamped to 1" in w.source


def test_azure2024_bad_timestamp_shows_the_2024_layout(tmp_path):
    path = write(tmp_path, "week.csv", [*AZURE_2024[:3], "2024-05-10 25:00:00+00:00,1,1"])
    with pytest.raises(WorkloadError, match=r"week.csv line 4: field 'TIMESTAMP' is '2024-05-10 25:00:00\+00:00', "
                                            r"expected a timestamp like '2024-05-10 00:00:00.009930\+00:00'"):
        load_trace(path=path, fmt="azure2024")


# --------------------------------------------------------------------------- BurstGPT

BURSTGPT_V1 = [  # the published column layout; Response tokens 0 marks a failed request
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type",
    "5,ChatGPT,472,18,490,Conversation log",
    "45,ChatGPT,1087,230,1317,Conversation log",
    "118,GPT-4,417,0,417,Conversation log",
    "140,ChatGPT,1360,195,1555,API log",
    "161,ChatGPT,0,0,0,API log",
]


def test_burstgpt_v1_skips_zero_token_rows_and_counts_them(tmp_path):
    w = build_workload(trace(write(tmp_path, "BurstGPT_1.csv", BURSTGPT_V1), "burstgpt"), seed=0)
    assert list(w.arrival_s) == [0.0, 40.0, 135.0]
    assert list(w.prompt_tokens) == [472, 1087, 1360] and list(w.output_tokens) == [18, 230, 195]
    assert "2 rows with zero tokens skipped" in w.source


def test_burstgpt_v3_columns(tmp_path):
    rows = [BURSTGPT_V1[0] + ",Session ID,Elapsed time",
            "5,ChatGPT,472,18,490,Conversation log,17,1.93", "7.5,GPT-4,100,9,109,API log,18,0.88"]
    w = load_trace(path=write(tmp_path, "v3.csv.gz", rows, gz=True), fmt="burstgpt")
    assert list(w.arrival_s) == [0.0, 2.5] and list(w.output_tokens) == [18, 9]


def test_burstgpt_unknown_column_and_all_zero(tmp_path):
    with pytest.raises(WorkloadError, match=r"b.csv line 1: unknown column\(s\) 'Region' for the burstgpt format"):
        load_trace(path=write(tmp_path, "b.csv", [BURSTGPT_V1[0] + ",Region", "5,ChatGPT,1,1,2,API log,eu"]),
                   fmt="burstgpt")
    with pytest.raises(WorkloadError, match="every row has zero tokens"):
        load_trace(path=write(tmp_path, "z.csv", [BURSTGPT_V1[0], BURSTGPT_V1[3]]), fmt="burstgpt")


# --------------------------------------------------------------------------- plain CSV / JSONL

@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_plain_logs_reproduce_the_azure_rows(tmp_path, fmt):
    azure = load_trace("azure_conv_2023")
    rows = list(zip(*(a[:200].tolist() for a in (azure.arrival_s, azure.prompt_tokens, azure.output_tokens))))
    rows = rows[100:] + rows[:100]                                        # unsorted on purpose
    if fmt == "csv":
        lines = ["arrival_s,prompt_tokens,output_tokens", *(f"{t + 1e6!r},{p},{o}" for t, p, o in rows)]
    else:
        lines = [json.dumps({"arrival_s": t + 1e6, "prompt_tokens": p, "output_tokens": o})
                 for t, p, o in rows]
    w = load_trace(path=write(tmp_path, f"log.{fmt}", lines), fmt=fmt)
    assert np.allclose(w.arrival_s, azure.arrival_s[:200], atol=1e-6, rtol=0)
    assert np.array_equal(w.prompt_tokens, azure.prompt_tokens[:200]) and "re-sorted" in w.source


def test_plain_csv_errors(tmp_path):
    with pytest.raises(WorkloadError, match=r"p.csv line 1: header lacks field\(s\) 'arrival_s'"):
        load_trace(path=write(tmp_path, "p.csv", ["time,prompt_tokens,output_tokens", "0,1,1"]), fmt="csv")
    with pytest.raises(WorkloadError, match=r"q.csv line 3: field 'arrival_s' is 'inf', expected a number of seconds"):
        load_trace(path=write(tmp_path, "q.csv", ["arrival_s,prompt_tokens,output_tokens", "0,1,1", "inf,1,1"]),
                   fmt="csv")
    with pytest.raises(WorkloadError, match="unknown trace format 'parquet'"):
        load_trace(path=write(tmp_path, "r.csv", ["x"]), fmt="parquet")


def test_streaming_chunks_give_the_same_workload(tmp_path):
    whole = load_trace("azure_code_2023")
    path = tmp_path / "code.csv.gz"
    path.write_bytes((resources.files("sim") / "data" / "azure_code_2023.csv.gz").read_bytes())
    chunked = load_trace(path=str(path), fmt="azure2023", chunk_rows=1000)
    assert np.array_equal(whole.arrival_s, chunked.arrival_s)
    assert np.array_equal(whole.output_tokens, chunked.output_tokens)


def test_conv_trace_loads_well_under_a_second():
    data = (resources.files("sim") / "data" / "azure_conv_2023.csv.gz").read_bytes()
    import io
    started = time.perf_counter()
    w = read_trace(lambda: io.BytesIO(data), "conv", "azure2023", "conv")   # uncached parse
    assert len(w) == 19_366 and time.perf_counter() - started < 0.8


# --------------------------------------------------------------------------- length-only datasets

@pytest.mark.parametrize("name, rows, prompt_mean, output_mean, original", [
    ("sharegpt_8k", 30_731, 2340.0, 438.7, "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"),
    ("arxiv_summarization", 28_257, 2588.1, 291.4, "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"),
])
def test_length_datasets(name, rows, prompt_mean, output_mean, original):
    w = load_trace(name)
    assert len(w) == rows and np.all(w.arrival_s == 0.0) and "lengths only" in w.source
    assert w.prompt_tokens.mean() == pytest.approx(prompt_mean, abs=0.1)
    assert w.output_tokens.mean() == pytest.approx(output_mean, abs=0.1)
    full = SHARED / "lengths" / original
    if full.exists():   # the bundled two columns are the original's first two, in order
        assert np.array_equal(load_trace(path=str(full), fmt="lengths").prompt_tokens, w.prompt_tokens)


def test_length_dataset_cannot_be_replayed():
    with pytest.raises(WorkloadError, match="lengths format has no arrival times; use kind poisson"):
        build_workload({"name": "s", "kind": "trace", "bundled": "sharegpt_8k"}, seed=0)


def test_length_dataset_with_synthetic_arrivals_keeps_pairs():
    cfg = {"name": "s", "kind": "gamma", "rate": 4.0, "cv": 2.0, "num_requests": 5000,
           "lengths": {"dist": "empirical_joint", "trace": "sharegpt_8k"}}
    w = build_workload(cfg, seed=3)
    data = load_trace("sharegpt_8k")
    pairs = set(zip(data.prompt_tokens.tolist(), data.output_tokens.tolist()))
    assert all(pair in pairs for pair in zip(w.prompt_tokens.tolist(), w.output_tokens.tolist()))
