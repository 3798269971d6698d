"""Load shaping: pure functions that turn a replayed trace into the load a question asks for.

Each takes a `Workload` and returns a new one whose `source` says what was done, so a
result always names the load it came from. Random ones take a numpy Generator and are
deterministic given it. Arrival times stay ascending from 0; request order is kept
wherever arrivals do not force a new one; prefix-block hashes travel with their requests.

* `spread_buckets`: undo timestamp quantisation (Mooncake logs arrivals in ~3 s buckets).
* `window`: the requests in [start, start + duration) of the original time line.
* `first`: the first n requests.
* `thin`: keep each request independently with probability p (rate x p, same burst shape).
* `superpose`: k copies of the trace, each cyclically shifted by a random offset, merged
  (rate x k with the trace's own burstiness, unlike resampling a Poisson process).
* `time_scale`: divide every arrival time by f (rate x f, bursts f times shorter).
* `clip_to_context`: make every request fit a model's context window (truncate or drop).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from sim.workload_record import Workload, WorkloadError


def _from_zero(arrival_s: np.ndarray) -> np.ndarray:
    return arrival_s - arrival_s[0]


def spread_buckets(w: Workload, bucket_s: float, rng: np.random.Generator) -> Workload:
    """Spread the requests that share a timestamp uniformly over that timestamp's bucket.

    A bucket runs from its timestamp to the next distinct timestamp, at most `bucket_s`
    long (so an isolated timestamp is not smeared over a long gap). The requests of a bucket
    get sorted uniform times in it, in file order, so a conversation's turns stay in order
    and the count per bucket, all that the trace knows about the rate, is kept.
    """
    stamps, first, counts = np.unique(w.arrival_s, return_index=True, return_counts=True)
    ends = np.append(stamps[1:], np.inf)
    width = np.minimum(ends - stamps, bucket_s)
    bucket = np.repeat(np.arange(len(stamps)), counts)
    offsets = rng.uniform(0.0, 1.0, len(w)) * width[bucket]
    # sort within each bucket (bucket index first) so the file order inside a bucket is kept
    offsets = offsets[np.lexsort((offsets, bucket))]
    arrival = stamps[bucket] + offsets
    return w.select(np.arange(len(w)), _from_zero(arrival),
                    f"bucketed timestamps spread uniformly within their bucket (<= {bucket_s:g} s)")


def window(w: Workload, start_s: float, duration_s: float | None) -> Workload:
    """Requests arriving in [start_s, start_s + duration_s) (None: to the end), shifted to 0."""
    end = np.inf if duration_s is None else start_s + duration_s
    keep = np.flatnonzero((w.arrival_s >= start_s) & (w.arrival_s < end))
    if len(keep) == 0:
        raise WorkloadError(f"workload.window [{start_s:g}, {end:g}) s selects no request: the trace spans "
                            f"[0, {w.arrival_s[-1]:.3f}] s; move window.start_s or widen window.duration_s")
    note = f"window {start_s:g}-{end:g} s" if duration_s is not None else f"window {start_s:g} s-end"
    return w.select(keep, _from_zero(w.arrival_s[keep]), note)


def first(w: Workload, n: int) -> Workload:
    """The first n requests (all of them if there are fewer)."""
    if n >= len(w):
        return w
    return w.select(np.arange(n), w.arrival_s[:n], f"first {n} requests")


def thin(w: Workload, keep: float, rng: np.random.Generator) -> Workload:
    """Keep each request with probability `keep` in (0, 1]."""
    if keep >= 1.0:
        return w
    rows = np.flatnonzero(rng.random(len(w)) < keep)
    if len(rows) == 0:
        raise WorkloadError(f"workload.thin = {keep:g} keeps none of the {len(w)} requests; raise it")
    return w.select(rows, _from_zero(w.arrival_s[rows]), f"thinned to {keep:g} ({len(rows)} requests kept)")


def superpose(w: Workload, copies: int, rng: np.random.Generator) -> Workload:
    """`copies` copies of the trace merged; copy 0 as is, copy k rotated by a uniform offset.

    Rotation is cyclic over a period of span + mean gap (so the wrap does not stack the last
    and first request), so every copy keeps its bursts and the span stays the same: the
    rate grows `copies` times. Copy k's prefix hashes are shifted by k x (max hash + 1):
    copies stand for other users, who do not share the original users' conversations.
    """
    if copies == 1:
        return w
    n = len(w)
    period = w.duration_s * (1 + 1 / max(1, n - 1)) or 1.0
    shifts = np.concatenate([[0.0], rng.uniform(0.0, period, copies - 1)])
    times = np.concatenate([(w.arrival_s + s) % period for s in shifts])
    rows = np.tile(np.arange(n), copies)
    copy = np.repeat(np.arange(copies), n)
    order = np.argsort(times, kind="stable")
    hash_shift = None
    if w.has_prefix_blocks:
        span = int(w.prefix_block_hashes.max(initial=0)) + 1
        hash_shift = (copy * span)[order]
    return w.select(rows[order], _from_zero(times[order]), f"{copies} superposed shifted copies",
                    hash_shift=hash_shift)


def time_scale(w: Workload, factor: float) -> Workload:
    """Arrival times divided by `factor` (> 1 compresses time: `factor` times the rate)."""
    return w.select(np.arange(len(w)), w.arrival_s / factor, f"rate x{factor:g}")


def clip_to_context(w: Workload, max_context: int, policy: Literal["truncate", "drop"]) -> Workload:
    """Make prompt + output <= max_context for every request; the note counts what changed.

    `truncate` keeps every request. A prompt that fits keeps its length and its output stops
    at the context's end, as vLLM stops at max_model_len. A prompt that does not fit (vLLM
    would reject it) is cut, as a chat front end cuts history, to leave room for its output
    (itself capped at max_context - 1); it keeps its first tokens and the prefix blocks they
    cover. `drop` removes the requests that do not fit.
    """
    over = w.prompt_tokens + w.output_tokens > max_context
    if not over.any():
        return w
    if policy == "drop":
        rows = np.flatnonzero(~over)
        if len(rows) == 0:
            raise WorkloadError(f"workload.max_context = {max_context}: every request is longer; raise it")
        return w.select(rows, _from_zero(w.arrival_s[rows]),
                        f"{int(over.sum())} requests over the {max_context}-token context dropped")
    fits = w.prompt_tokens < max_context
    output = np.where(fits, np.minimum(w.output_tokens, max_context - w.prompt_tokens),
                      np.minimum(w.output_tokens, max_context - 1))
    prompt = np.where(fits, w.prompt_tokens, max_context - output)
    cut_prompts = int((prompt < w.prompt_tokens).sum())
    cut_outputs = int((output < w.output_tokens).sum())
    return w.select(np.arange(len(w)), w.arrival_s,
                    f"clipped to a {max_context}-token context ({cut_prompts} prompts and {cut_outputs} "
                    "outputs truncated)", prompt_tokens=prompt, output_tokens=output)
