"""The per-request table: one row per request, the same columns for sim/ and real/.

Times are seconds from the start of the run (the first arrival is at 0). A time a request
never reached (a monolithic request has no transfer; a rejected one has nothing) is NaN.
Comparing a simulated run with a measured one is a join on `request_id`.
"""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter
from typing import Iterable

import numpy as np
import pandas as pd

from sim.request import Request

REQUEST_COLUMNS: dict[str, str] = {
    "request_id": "position of the request in the workload",
    "arrival_s": "time the request reached the router",
    "prompt_tokens": "prompt length in tokens",
    "output_tokens": "output length in tokens asked for (and produced, when completed)",
    "status": "completed | rejected | failed",
    "reason": "why a request was rejected or failed; empty otherwise",
    "prefill_instance": "instance that computed the prompt (-1 if none)",
    "decode_instance": "instance that emitted the output tokens (-1 if none)",
    "prefill_start_s": "start of the first engine step that computed part of the prompt",
    "prefill_end_s": "end of the step that completed the prompt",
    "transfer_start_s": "decode side starts pulling the prompt's KV (disaggregated only)",
    "transfer_end_s": "the KV has arrived on the decode side (disaggregated only)",
    "first_token_s": "time the first output token was emitted",
    "completion_s": "time the last output token was emitted",
    "ttft_s": "first_token_s - arrival_s",
    "e2e_s": "completion_s - arrival_s",
    "tpot_s": "(completion_s - first_token_s) / (output_tokens - 1): mean inter-token latency",
    "itl_max_s": "largest gap between two consecutive output tokens",
    "num_preemptions": "times the request was preempted and recomputed",
    "kv_bytes_transferred": "bytes of KV moved from prefill to decode",
    "cached_prompt_tokens": "prompt tokens served from the prefix cache instead of computed",
    "retries": "times the proxy resent the request after an instance failure",
    "kv_recomputes": "failed KV pulls whose prompt the decode instance recomputed",
}


_DERIVED = ("request_id", "ttft_s", "e2e_s", "tpot_s")
_RECORDED = [name for name in REQUEST_COLUMNS if name not in _DERIVED]
# Numeric columns become arrays before pandas sees them: pandas inferring the type of a
# million Python objects per column took most of the table's time. numpy's own inference
# keeps the same types (int64, or float64 where a real run leaves an int field NaN).
_TEXT_COLUMNS = {field.name for field in fields(Request) if field.type == "str"}


def _column(rows: list[Request], name: str) -> np.ndarray | list:
    values = list(map(attrgetter(name), rows))
    return values if name in _TEXT_COLUMNS else np.array(values)


def requests_table(requests: Iterable[Request]) -> pd.DataFrame:
    rows = sorted(requests, key=lambda r: r.id)
    frame = pd.DataFrame({"request_id": _column(rows, "id")} | {name: _column(rows, name) for name in _RECORDED})
    frame["ttft_s"] = frame["first_token_s"] - frame["arrival_s"]
    frame["e2e_s"] = frame["completion_s"] - frame["arrival_s"]
    has_gaps = (frame["output_tokens"] > 1) & (frame["status"] == "completed")
    frame["tpot_s"] = ((frame["completion_s"] - frame["first_token_s"]) / (frame["output_tokens"] - 1)).where(has_gaps)
    frame["itl_max_s"] = frame["itl_max_s"].where(has_gaps)
    return frame[list(REQUEST_COLUMNS)]
