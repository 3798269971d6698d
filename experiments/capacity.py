"""An optimistic bound on the request rate a cluster can serve, from the step-time model alone.

The planner skips configurations whose bound is below the target rate: no simulation can
make them pass. The bound must never be below what the simulator achieves, so each pool is
credited with its best case:

* prefill: full `max_num_batched_tokens` chunks of fresh prompt (no context to attend to);
* decode: the largest batch that fits max_num_seqs, the KV cache (at the mean context) and
  the TPOT limit (a batch whose step exceeds the TPOT limit fails every request in it);
* a monolithic instance serves at most min(prefill-bound, decode-bound) requests per second
  (its prefill and decode share one GPU; mixed steps can overlap them, so neither is charged
  for the other); a disaggregated cluster at most min(prefill pool, decode pool).
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.catalog import ModelSpec
from sim.config import ClusterSpec, PoolSpec
from sim.step_time import BatchShape, StepTimeModel


@dataclass(frozen=True, slots=True)
class Lengths:
    """Mean prompt and output tokens of the workload."""

    prompt: float
    output: float


def prefill_tokens_per_s(pool: PoolSpec, model: StepTimeModel) -> float:
    chunk = pool.limits.max_num_batched_tokens
    return chunk / model.cost(BatchShape.of([(chunk, 0)], sampled_seqs=1)).time_s


def decode_tokens_per_s(pool: PoolSpec, model: StepTimeModel, lengths: Lengths, tpot_s: float) -> float:
    """Output tokens per second of the best decode batch (0 if even one sequence misses TPOT)."""
    context = int(lengths.prompt + lengths.output / 2)

    def step_s(batch: int) -> float:   # `batch` decodes of one token after `context` cached ones
        return model.cost(BatchShape(batch, batch * (context + 1), batch * (context + 1), batch)).time_s

    low, high = 0, min(pool.limits.max_num_seqs, max(1, int(pool.kv_tokens // (context + 1))))
    while low < high:   # the largest batch within the TPOT limit (step time grows with the batch)
        mid = (low + high + 1) // 2
        low, high = (mid, high) if step_s(mid) <= tpot_s else (low, mid - 1)
    return low / step_s(low) if low else 0.0


def instance_capacity_rps(llm: ModelSpec, pool: PoolSpec, lengths: Lengths, tpot_s: float) -> float:
    """Requests per second one instance of `pool` serving `llm` can serve at most."""
    model = StepTimeModel(llm, pool.gpu, pool.tp)
    bounds = []
    if pool.role in ("mixed", "prefill"):
        bounds.append(prefill_tokens_per_s(pool, model) / lengths.prompt)
    if pool.role in ("mixed", "decode"):
        bounds.append(decode_tokens_per_s(pool, model, lengths, tpot_s) / lengths.output)
    return min(bounds)


def capacity_rps(spec: ClusterSpec, lengths: Lengths, tpot_s: float) -> float:
    """Requests per second `spec` can serve at most (see the module docstring)."""
    return min(p.instances * instance_capacity_rps(spec.model, p, lengths, tpot_s) for p in spec.pools)
