"""Fast-forward over an unchanged decode batch: many engine steps as one simulation event.

After a step in which every running sequence decodes one token, nothing was preempted and
admission stopped (or had nothing to admit), the next steps compose the same batch until
one of three things happens: a sequence emits its last token, the KV blocks for the growing
contexts run out, or something from outside reaches the engine (a new request, pulled KV,
freed blocks). Admission cannot succeed in between: the running count and token budget stay
fixed and free blocks only shrink. The window covers the steps up to the first of the first
two; the engine cuts it short at the step in progress when the third happens.

Within a window step times have a closed form (contexts grow by one token per step), so the
window's times, FLOPs and bytes are computed at once (sim/window_steps.py), with the same
arithmetic in the same order as the step-by-step path: results are identical bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.kv_cache import BlockPool
from sim.request import Sequence
from sim.scheduler import ScheduledStep
from sim.step_time import StepTimeModel
from sim.window_steps import window_steps

MIN_STEPS = 2   # below this a window saves nothing over a plain step


@dataclass(slots=True, eq=False)
class DecodeWindow:
    seqs: list[Sequence]
    contexts: list[int]        # each sequence's computed tokens at the first step
    start: float               # start time of the first step (each later one starts when the previous ends)
    work: np.ndarray           # rows: end time (accumulated exactly as SimPy would), FLOPs, bytes of each step
    held: list[int]            # each sequence's blocks after the first step's allocation
    block_size: int
    truncated: bool = False
    pulls_due: bool = False    # pulls wait for the end of the step in progress (Engine._pull_or_cut)
    ends: np.ndarray = field(init=False)   # work[0], taken once: the engine and routers read it often
    _allocated: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ends = self.work[0]

    def __len__(self) -> int:
        return len(self.ends)

    def steps_done_by(self, now: float) -> int:
        """Steps completed when the step in progress at `now` ends (an outside event at the
        instant a step ends is seen by the schedule then: step ends come last in their instant)."""
        return int(self.ends.searchsorted(now, side="left")) + 1

    def steps_done_before(self, now: float) -> int:
        """Steps that ended before `now` (a failure at `now` loses the step in progress)."""
        return int(self.ends.searchsorted(now, side="left"))

    def blocks_allocated_by(self, now: float) -> int:
        """Blocks the window's later steps have allocated by `now` (one allocation per step start)."""
        # Step j + 1 starts when step j ends (a step starting now has not yet scheduled).
        started = min(self.steps_done_before(now), len(self.ends) - 1)
        if started not in self._allocated:
            self._allocated[started] = blocks_needed(self.contexts, self.held, self.block_size, started + 1)
        return self._allocated[started]


def plan_window(step: ScheduledStep, running: list[Sequence], pool: BlockPool, block_size: int,
                step_model: StepTimeModel, now: float) -> DecodeWindow | None:
    """The window starting with `step` (already scheduled, its blocks allocated), or None
    when the batch may change after this step or the window would be too short."""
    seqs = step.seqs
    # every running sequence, one token each (a step schedules at least one token per sequence)
    if step.preempted or len(seqs) != len(running) or sum(step.tokens) != len(seqs):
        return None
    steps = min(seq.max_new_tokens - seq.num_emitted for seq in seqs)
    if steps < MIN_STEPS:
        return None
    contexts, held = [], []
    for seq in seqs:
        if seq.num_computed + 1 != seq.num_tokens:
            return None   # a chunk of one token that leaves its prompt unfinished
        contexts.append(seq.num_computed)
        held.append(seq.blocks)
    steps = _steps_within_free_blocks(contexts, held, pool.free, block_size, steps)
    if steps < MIN_STEPS:
        return None
    work = window_steps(step_model, len(seqs), sum(contexts), steps, now)
    return DecodeWindow(list(seqs), contexts, now, work, held, block_size)


def blocks_needed(contexts: list[int], held: list[int], block_size: int, steps: int) -> int:
    """Blocks beyond `held` that `steps` decode steps allocate: step j (from 0) allocates for
    contexts + j + 1 tokens, so after `steps` steps each sequence holds ceil((context + steps) / block_size).
    Plain Python: batches are small enough that numpy's per-call cost would dominate (and a
    plain loop costs half a generator's for the usual one or two sequences)."""
    total = 0
    for context, blocks in zip(contexts, held):
        extra = -(-(context + steps) // block_size) - blocks
        if extra > 0:
            total += extra
    return total


def _steps_within_free_blocks(contexts: list[int], held: list[int], free: int, block_size: int,
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
