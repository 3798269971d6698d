"""The times, FLOPs and bytes of a decode window's steps (sim/decode_window.py), all at once:
a loop compiled by numba, apart from the window's planning, which mypyc compiles
(sim/compiled.py; numba compiles only functions that run from source)."""

from __future__ import annotations

import numpy as np
from numba import njit

from sim.step_time import StepTimeModel, attention_work


def window_steps(step_model: StepTimeModel, seqs: int, context_sum: int, steps: int, start_s: float) -> np.ndarray:
    """End times, FLOPs and bytes (the rows of a (3, steps) array) of `steps` back-to-back
    steps, the first starting at `start_s`, of an unchanged batch of `seqs` decode sequences
    whose cached contexts sum to `context_sum` at the first step.

    Each step adds one token to every context: attention work grows, the linear layers and
    the all-reduce cost the same. Each step's values are those `StepTimeModel.cost` gives for
    it, and each end is the previous end plus the step's time, as SimPy's clock advances: bit
    for bit what the step-by-step engine computes.
    """
    return _decode_steps(start_s, steps, seqs, context_sum, *step_model.decode_step_constants(seqs))


_attention_work = njit(cache=True)(attention_work)   # the step-time model's own function, compiled


@njit(cache=True)
def _decode_steps(start_s, steps, seqs, context_sum, linear_s, linear_flops, weight_bytes, allreduce_s, overhead_s,
                  attention_constants):
    """The loop of `window_steps`, in the order of `StepTimeModel.cost`."""
    work = np.empty((3, steps))   # one array: each array returned to Python costs as much as a short window
    end = start_s
    for step in range(steps):
        # A decode is a chunk of 1 token after c cached ones: c + 1 pairs, c + 1 KV tokens read.
        pairs = context_sum + seqs * (step + 1)
        attention_s, attention_flops, kv_bytes = _attention_work(pairs, pairs, seqs, *attention_constants)
        end += linear_s + attention_s + allreduce_s + overhead_s
        work[0, step] = end
        work[1, step] = linear_flops + attention_flops
        work[2, step] = weight_bytes + kv_bytes
    return work
