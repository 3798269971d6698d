"""The side-by-side table printed on the terminal: one column per architecture."""

from __future__ import annotations

from typing import Any, Callable

# (summary key, label, formatter)
ROWS: list[tuple[str, str, Callable[[Any], str]]] = []


def _row(key: str, label: str, fmt: Callable[[Any], str]) -> None:
    ROWS.append((key, label, fmt))


def _ms(value: float) -> str:
    return f"{value * 1e3:,.1f}"


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def _num(digits: int) -> Callable[[float], str]:
    return lambda value: f"{value:,.{digits}f}"


_row("cluster", "cluster", str)
_row("gpus", "GPUs", str)
_row("requests", "requests", str)
_row("completed", "completed", str)
_row("rejected", "rejected (too long)", str)
_row("failed", "failed", str)
_row("retries", "retried after a failure", str)
_row("kv_recomputes", "KV pulls failed, recomputed", str)
for _name, _label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2e", "E2E")):
    for _q in (("p50", "p90", "p99") if _name == "ttft" else ("p50", "p99")):
        _row(f"{_name}_{_q}_s", f"{_label} {_q} (ms)", _ms)
_row("output_tokens_per_s", "throughput (output tok/s)", _num(0))
_row("output_tokens_per_s_per_gpu", "throughput per GPU (tok/s)", _num(0))
_row("ttft_attainment", "TTFT SLO attainment", _pct)
_row("tpot_attainment", "TPOT SLO attainment", _pct)
_row("slo_attainment", "SLO attainment (both)", _pct)
_row("goodput_rps", "goodput (req/s in SLO)", _num(2))
_row("compute_util", "compute utilisation (mean)", _pct)
_row("memory_util", "memory-bw utilisation (mean)", _pct)
for _role in ("prefill", "decode"):
    _row(f"{_role}_compute_util", f"  {_role} pool compute util", _pct)
    _row(f"{_role}_memory_util", f"  {_role} pool memory-bw util", _pct)
_row("preemptions", "preemptions", str)
_row("prefix_hit_rate", "prefix cache hit rate (prompt tokens)", _pct)
_row("kv_transferred_gb", "KV transferred P->D (GB)", _num(1))
_row("cost_per_hour", "cost per hour (USD)", _num(2))
_row("cost_per_million_output_tokens", "cost per 1M output tokens (USD)", _num(3))
_row("sim_wall_s", "simulation wall time (s)", _num(1))


def format_table(summaries: dict[str, dict[str, Any]], slo_line: str = "") -> str:
    """Rows of metrics, one column per run; a metric a run lacks shows as '-'."""
    names = list(summaries)
    rows = [(label, [fmt(summaries[n][key]) if key in summaries[n] else "-" for n in names])
            for key, label, fmt in ROWS if any(key in summaries[n] for n in names)]
    label_width = max(len(label) for label, _ in rows)
    widths = [max(len(n), *(len(values[i]) for _, values in rows)) for i, n in enumerate(names)]
    header = " " * label_width + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths))
    lines = [header, "-" * len(header)]
    lines += [label.ljust(label_width) + "  " + "  ".join(v.rjust(w) for v, w in zip(values, widths))
              for label, values in rows]
    if slo_line:
        lines.append(slo_line)
    return "\n".join(lines)
