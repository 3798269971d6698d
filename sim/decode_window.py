"""Fast-forward over an unchanged decode batch: many engine steps as one simulation event.

After a step in which every running sequence decodes one token, nothing was preempted and
admission stopped (or had nothing to admit), the next steps compose the same batch until
one of three things happens: a sequence emits its last token, the KV blocks for the growing
contexts run out, or something from outside reaches the engine (a new request, pulled KV,
freed blocks). Admission cannot succeed in between: the running count and token budget stay
fixed and free blocks only shrink. The window covers the steps up to the first of the first
two; the engine cuts it short at the step in progress when the third happens.

Within a window step times have a closed form (contexts grow by one token per step), so the
window's times, FLOPs and bytes are arrays computed at once, with the same arithmetic as the
step-by-step path: results are identical bit for bit.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from sim.kv_cache import BlockPool
from sim.request import Sequence
from sim.scheduler import ScheduledStep
from sim.step_time import StepTimeModel

MIN_STEPS = 2   # below this a window saves nothing over a plain step


@dataclass(slots=True, eq=False)
class DecodeWindow:
    seqs: list[Sequence]
    contexts: np.ndarray       # int64: each sequence's computed tokens at the first step
    starts: np.ndarray         # start time of each step (the first is the window's start)
    ends: np.ndarray           # end time of each step, accumulated exactly as SimPy would
    flops: np.ndarray
    bytes: np.ndarray
    held: np.ndarray           # int64: each sequence's blocks after the first step's allocation
    block_size: int
    truncated: bool = False
    _later_step_starts: list[float] | None = None
    _allocated: list[int] | None = None

    def __len__(self) -> int:
        return len(self.ends)

    def steps_done_by(self, now: float) -> int:
        """Steps completed when the step in progress at `now` ends (an event exactly at a
        step end is seen by the schedule at that time)."""
        return int(np.searchsorted(self.ends, now, side="left")) + 1

    def steps_done_before(self, now: float) -> int:
        """Steps that ended before `now` (a failure at `now` loses the step in progress)."""
        return int(np.searchsorted(self.ends, now, side="left"))

    def blocks_allocated_by(self, now: float) -> int:
        """Blocks the window's later steps have allocated by `now` (one allocation per step start)."""
        if self._allocated is None:   # built on the first query: routers ask often, windows end early
            self._later_step_starts = self.ends[:-1].tolist()
            self._allocated = self._allocations_by_step()
        return self._allocated[bisect_right(self._later_step_starts, now)]

    def _allocations_by_step(self) -> list[int]:
        """Entry j: blocks allocated by steps 1..j. A sequence first needs a block at step
        held * block_size - context (its context then outgrows its blocks), then every block_size steps."""
        steps = len(self.ends)
        first = self.held * self.block_size - self.contexts
        count = np.maximum(0, -(-(steps - first) // self.block_size))
        group_start = np.repeat(np.cumsum(count) - count, count)
        at = np.repeat(first, count) + self.block_size * (np.arange(count.sum()) - group_start)
        return np.cumsum(np.bincount(at, minlength=steps)).tolist()


def plan_window(step: ScheduledStep, running: list[Sequence], pool: BlockPool, block_size: int,
                step_model: StepTimeModel, now: float) -> DecodeWindow | None:
    """The window starting with `step` (already scheduled, its blocks allocated), or None
    when the batch may change after this step or the window would be too short."""
    if step.preempted or len(step.seqs) != len(running):
        return None
    for seq, tokens in zip(step.seqs, step.tokens):
        if tokens != 1 or seq.num_computed + 1 != seq.num_tokens:
            return None
    steps = min(seq.max_new_tokens - seq.num_emitted for seq in step.seqs)
    if steps < MIN_STEPS:
        return None
    contexts = np.fromiter((seq.num_computed for seq in step.seqs), dtype=np.int64, count=len(step.seqs))
    held = np.fromiter((seq.blocks for seq in step.seqs), dtype=np.int64, count=len(step.seqs))
    steps = _steps_within_free_blocks(contexts, held, pool.free, block_size, steps)
    if steps < MIN_STEPS:
        return None
    times, flops, nbytes = step_model.decode_window(len(step.seqs), int(contexts.sum()), steps)
    ends = np.cumsum(np.concatenate(([now], times)))[1:]   # sequential, like now += delay
    starts = np.concatenate(([now], ends[:-1]))
    return DecodeWindow(list(step.seqs), contexts, starts, ends, flops, nbytes, held, block_size)


def blocks_needed(contexts: np.ndarray, held: np.ndarray, block_size: int, steps: int) -> int:
    """Blocks beyond `held` that `steps` decode steps allocate: step j (from 0) allocates for
    contexts + j + 1 tokens, so after `steps` steps each sequence holds ceil((contexts + steps) / block_size)."""
    return int(np.maximum(0, -(-(contexts + steps) // block_size) - held).sum())


def _steps_within_free_blocks(contexts: np.ndarray, held: np.ndarray, free: int, block_size: int,
                              limit: int) -> int:
    """The most steps (<= limit) whose block allocations fit in `free` (the first step's are made)."""
    def need(k: int) -> int:
        return blocks_needed(contexts, held, block_size, k)

    if need(limit) <= free:
        return limit
    low, high = 1, limit          # need(low) <= free < need(high)
    while high - low > 1:
        middle = (low + high) // 2
        if need(middle) <= free:
            low = middle
        else:
            high = middle
    return low


def delay_until(now: float, at: float) -> float:
    """A delay d with now + d == at exactly in floating point, so SimPy's clock lands on `at`."""
    delay = at - now
    while now + delay < at:
        delay = math.nextafter(delay, math.inf)
    while now + delay > at:
        delay = math.nextafter(delay, -math.inf)
    return delay
