"""One serving instance (a vLLM server on `tp` GPUs), driven by SimPy events.

The loop is vLLM's: schedule a batch, run it for the step time the cost model gives, then
account for the tokens it computed. Requests that arrive during a step are seen by the next
schedule. An engine with nothing to run sleeps until a sequence arrives, remote KV lands or
held blocks are freed.

With `fast_forward`, a run of steps over an unchanged decode batch is one event (see
`sim.decode_window`); an outside event during it cuts it at the step in progress. Both paths
give the same results, bit for bit; the step-by-step one is kept as the reference.

The loop is a chain of events, each scheduled by the callback of the one before (`_pending`),
not a SimPy process: a process pays a generator resume per event and an interrupt (two
exceptions and one more event) per cut window (`python -m experiments.benchmark_events`
prices both). An event that is no longer `_pending` when it fires (a cut window's planned
end, anything planned before a failure) does nothing.

The engine does not know the cluster around it; it reports through callbacks:
`on_token(engine, seq, now)` for a token a sequence samples,
`on_repeated_tokens(engine, seqs, times)` when each of `seqs` sampled a token at each of
`times` (a fast-forward window, after `on_token` for each sequence's first one),
`on_finished(engine, seq, now)` when a sequence has emitted all its tokens, and
`start_pull(engine, seq)` on a decode instance when a sequence's prompt KV may be pulled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import simpy
from simpy.events import NORMAL, URGENT

from sim.decode_window import DecodeWindow, blocks_needed, plan_window
from sim.events import At
from sim.kv_cache import BlockPool
from sim.prefix_cache import PrefixCache
from sim.request import Sequence
from sim.router import LoadBoard
from sim.scheduler import Scheduler, SchedulerLimits, ScheduledStep
from sim.step_time import BatchShape, StepCost, StepTimeModel
from sim.utilisation import UtilisationTimeline

Callback = Callable[["Engine", Sequence, float], None]

MIXED, PREFILL, DECODE = "mixed", "prefill", "decode"
# A step ends after every ordinary event of its instant (SimPy's NORMAL is 1), so that the fast
# path agrees exactly with the step-by-step one: a step's end and an arrival, a transfer's end
# or a failure at the same instant resolve one way, whatever order their events were created in.
STEP_END = 2


@dataclass(slots=True)
class EngineHooks:
    on_token: Callback
    on_finished: Callback
    on_lost: Callable[["Engine", list[Sequence], float], None]
    on_repeated_tokens: Callable[["Engine", list[Sequence], np.ndarray], None] | None = None   # engines that decode
    start_pull: Callable[["Engine", Sequence], None] | None = None   # decode engines


class Engine:
    """A vLLM-like engine with role `mixed` (monolithic), `prefill` or `decode`.

    A prefill engine keeps the blocks of a finished sequence until `release_held` is called
    (the decode side has pulled them).
    """

    def __init__(self, env: simpy.Environment, instance_id: int, role: str, tp: int,
                 limits: SchedulerLimits, kv_pool: BlockPool, step_model: StepTimeModel,
                 hooks: EngineHooks, utilisation: UtilisationTimeline, fast_forward: bool = True,
                 prefix_cache: PrefixCache | None = None, board: LoadBoard | None = None, board_slot: int = 0):
        """`board`, if given, gets this engine's state (at `board_slot`) as it changes; its KV
        usage comes from `kv_pool`, which the caller mirrors there."""
        self.env = env
        self.instance_id = instance_id
        self.role = role
        self.tp = tp
        self.kv = kv_pool
        self.step_model = step_model
        self.prefix_cache = prefix_cache
        self.scheduler = Scheduler(limits, kv_pool, prefix_cache)
        self.hooks = hooks
        self.utilisation = utilisation
        self.up = True
        self.board = board
        self.board_slot = board_slot
        self.outstanding = 0          # sequences submitted and not finished (`_count_outstanding`)
        self.steps = 0
        self.fast_forward = fast_forward
        self.incarnation = 0          # bumped at each failure: callbacks from before it are stale
        # The event that drives the engine next; None while it is idle (up, nothing to run: the
        # next `_wake` schedules) or down.
        self._pending: At | None = None
        self._window: DecodeWindow | None = None
        self._window_steps = 0        # steps of `_window` that `_pending` ends
        self._step: ScheduledStep | None = None   # the single step running now, its start and cost
        self._step_start_s = 0.0
        self._step_cost: StepCost | None = None

    def _count_outstanding(self, change: int) -> None:
        """`outstanding` changes by `change`; the board hears of it while the instance is up
        (it reads a down one as unavailable, and hears of its count when it comes back)."""
        self.outstanding += change
        if self.board is not None and self.up:
            self.board.post_outstanding(self.board_slot, self.outstanding)

    def _set_up(self, up: bool) -> None:
        self.up = up
        if self.board is not None:
            self.board.post_up(self.board_slot, up, self.outstanding)

    def fail(self) -> None:
        """The instance goes down now; what it held is reported lost through `on_lost` before
        any ordinary event of this instant."""
        if self.up:
            self._set_up(False)
            self.incarnation += 1
            self._pending = None   # whatever was planned does not happen
            At(self.env, self.env.now, lambda _event: self._go_down(), URGENT)

    def recover(self) -> None:
        if not self.up:
            self._set_up(True)
            self._then(self.env.now, NORMAL, self._next_step)

    def submit(self, seq: Sequence) -> None:
        seq.engine_id = self.instance_id
        self._count_outstanding(1)
        self.scheduler.add(seq)
        window = self._window
        if seq.needs_remote_kv and window is not None and not window.truncated:
            self._start_pulls_at_step_end(window)
        else:
            self._wake()

    def kv_received(self, seq: Sequence) -> None:
        self.scheduler.kv_received(seq)
        self._wake()

    def kv_recompute(self, seq: Sequence) -> None:
        """The pull of `seq`'s prompt failed: compute the prompt here (its blocks are reserved)."""
        self.scheduler.kv_failed(seq)
        self._wake()

    def drop(self, seq: Sequence) -> None:
        """Give up on a sequence that was waiting for its KV."""
        self.scheduler.pulling.discard(seq)
        self.scheduler.release(seq)
        self._count_outstanding(-1)
        self._wake()

    def release_held(self, seq: Sequence) -> None:
        self.scheduler.release(seq)
        if self.scheduler.num_queued:   # freed blocks change a schedule only by admitting a queued sequence
            self._wake()

    def kv_usage(self) -> float:
        """Share of KV blocks in use now, counting the allocations of a window's steps so far."""
        used = self.kv.used
        if self._window is not None:
            used += self._window.blocks_allocated_by(self.env.now)
        return used / self.kv.capacity

    def kv_usage_floor(self) -> float:
        """A cheap lower bound of `kv_usage()`: the blocks held outside a window in progress."""
        return self.kv.used / self.kv.capacity

    def pending_tokens(self) -> int:
        """Tokens still to compute for the sequences queued or running here (a decode counts one)."""
        queues = (self.scheduler.waiting, self.scheduler.ready, self.scheduler.running)
        return sum(seq.num_tokens - seq.num_computed for queue in queues for seq in queue)

    def at_step_boundary(self, action: Callable[[], None]) -> None:
        """Call `action` when the step running now ends (after the engine's own bookkeeping of
        that instant), or now if the engine is between steps, idle or down."""
        window = self._window
        if window is not None:
            at = float(window.ends[window.steps_done_by(self.env.now) - 1])
        elif self._step_cost is not None:   # set with `_step`
            at = self._step_start_s + self._step_cost.time_s
        else:
            action()
            return
        At(self.env, at, lambda _event: action(), STEP_END)

    def _wake(self) -> None:
        """Something outside changed what the next schedule sees: an idle engine schedules
        after the events of this instant so far; a decode window ends with the step in progress."""
        if self._pending is None and self.up:
            self._then(self.env.now, NORMAL, self._next_step)
        elif self._window is not None and not self._window.truncated:
            window = self._window
            window.truncated = True
            self._window_steps = steps = window.steps_done_by(self.env.now)
            self._then(float(window.ends[steps - 1]), STEP_END, self._window_ended)

    def _then(self, at: float, priority: int, action: Callable[[At], None]) -> None:
        """The event at `at` drives the engine next: when it fires, `action(event)` runs; it does
        nothing if another event has taken its place by then."""
        self._pending = At(self.env, at, action, priority)

    def _start_pulls_at_step_end(self, window: DecodeWindow) -> None:
        """A sequence to pull arrived during a decode window. The schedule at the end of the
        step in progress would start its pull and go on with the same batch, so the window
        need not be cut: start the pulls then, outside the engine's loop, unless that
        schedule would do more (`_pull_or_cut`)."""
        if window.pulls_due:
            return
        window.pulls_due = True
        self.at_step_boundary(lambda: self._pull_or_cut(window))

    def _pull_or_cut(self, window: DecodeWindow) -> None:
        window.pulls_due = False
        if self._window is not window or window.truncated:
            return   # the window ended or was cut: the engine's own schedule starts the pulls
        steps = window.steps_done_by(self.env.now)   # the next step is steps + 1
        free = self.kv.free - blocks_needed(window.contexts, window.held, window.block_size, steps + 1)
        pulls = self.scheduler.pulls_while_decoding(free)
        if pulls is None or blocks_needed(window.contexts, window.held, window.block_size, len(window)) > \
                self.kv.free - sum(map(self.scheduler.pull_blocks, pulls)):
            self._wake()     # the batch would change or its later steps would run out of blocks
            return
        self.scheduler.start_pulls(pulls)
        self._report_pulls(pulls)

    def _report_pulls(self, seqs: list[Sequence]) -> None:
        start_pull = self.hooks.start_pull
        assert start_pull is not None, "only a decode engine pulls, and its hooks start pulls"
        for seq in seqs:
            start_pull(self, seq)

    def _go_down(self) -> None:
        now = self.env.now
        if self._window is not None:   # steps that ended before the failure did happen
            window, self._window = self._window, None
            done = window.steps_done_before(now)
            if done:
                self._apply_window(window, done)
        scheduler = self.scheduler
        lost = [*scheduler.running, *scheduler.waiting, *scheduler.ready,
                *sorted(scheduler.pulling, key=lambda seq: seq.request.id)]
        scheduler.running = []
        scheduler.waiting.clear()
        scheduler.ready.clear()
        scheduler.pulling.clear()
        self.kv.release(self.kv.used)   # held prefill blocks and pulls in flight are gone too
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
        self.outstanding = 0   # down: the board does not read it
        self._pending = None
        self._step = self._step_cost = None
        self.hooks.on_lost(self, lost, now)

    def _next_step(self, event: At | None = None) -> None:
        """Schedule the next step and start it (or a window of steps), or go idle."""
        if event is not None and event is not self._pending:
            return
        env = self.env
        while True:
            step = self.scheduler.schedule()
            if step.pulls:
                self._report_pulls(step.pulls)
            if step.seqs:
                break
            if not step.preempted:
                self._pending = None   # idle
                return
        start = env.now
        if step.admitted:
            self._mark_prefill_start(step.seqs[-step.admitted:], start)
        window = None
        if self.fast_forward:
            window = plan_window(step, self.scheduler.running, self.kv, self.scheduler.limits.block_size,
                                 self.step_model, start)
        if window is not None:
            self._window = window
            self._window_steps = len(window)
            self._then(float(window.ends[-1]), STEP_END, self._window_ended)
            return
        cost = self.step_model.cost(self._shape(step))
        self._step, self._step_start_s, self._step_cost = step, start, cost
        self._then(start + cost.time_s, STEP_END, self._step_ended)

    def _step_ended(self, event: At) -> None:
        if event is not self._pending:
            return
        step, cost = self._step, self._step_cost
        assert step is not None and cost is not None   # set together by `_next_step`
        self._step = self._step_cost = None
        self.steps += 1
        self.utilisation.add(self._step_start_s, self.env.now, cost.flops, cost.bytes)
        self._complete(step, self.env.now)
        self._next_step()

    def _window_ended(self, event: At) -> None:
        """The window's last step, or the step in progress when it was cut, has ended."""
        if event is not self._pending:
            return
        window, self._window = self._window, None
        assert window is not None   # `_pending` was this window's end
        self._apply_window(window, self._window_steps)
        self._next_step()

    def _apply_window(self, window: DecodeWindow, steps: int) -> None:
        """Account for the first `steps` steps of `window`, as `_complete` would have step by step."""
        seqs = window.seqs
        allocated = 0   # blocks_needed(..., steps), counted while setting each sequence's blocks
        for seq, context, held in zip(seqs, window.contexts, window.held):
            seq.blocks = max(held, -(-(context + steps) // window.block_size))
            allocated += seq.blocks - held
            seq.num_computed += steps
            seq.num_emitted += steps
        self.kv.allocate(allocated)
        self.utilisation.add_many(window.start, window.work, steps)
        self.steps += steps
        first = float(window.ends[0])
        for seq in seqs:   # the hooks read the request, not the sequence's counts
            self.hooks.on_token(self, seq, first)
        if steps > 1:
            on_repeated_tokens = self.hooks.on_repeated_tokens
            assert on_repeated_tokens is not None, "an engine that decodes in windows has this hook"
            on_repeated_tokens(self, seqs, window.ends[:steps])
        if any(seq.finished for seq in seqs):
            self._remove_finished(float(window.ends[steps - 1]))

    def _mark_prefill_start(self, admitted: list[Sequence], now: float) -> None:
        """The first step computing a request's prompt (on a decode instance: a prompt it
        computes itself, when no prefill instance was up) is the one that admits it: a request
        that is running has started its prompt."""
        for seq in admitted:
            request = seq.request
            if request.prefill_start_s != request.prefill_start_s:  # NaN: not started yet
                request.prefill_start_s = now
                request.prefill_instance = self.instance_id

    @staticmethod
    def _shape(step: ScheduledStep) -> BatchShape:
        return BatchShape.of([(n, seq.num_computed) for seq, n in zip(step.seqs, step.tokens)],
                             sum(seq.num_computed + n == seq.num_tokens for seq, n in zip(step.seqs, step.tokens)))

    def _complete(self, step: ScheduledStep, now: float) -> None:
        any_finished = False
        for seq, tokens in zip(step.seqs, step.tokens):
            seq.num_computed += tokens
            if seq.num_computed == seq.num_tokens:
                seq.num_emitted += 1
                self.hooks.on_token(self, seq, now)
                any_finished |= seq.finished
        if any_finished:
            self._remove_finished(now)

    def _remove_finished(self, now: float) -> None:
        for seq in self.scheduler.remove_finished(hold_blocks=self.role == PREFILL):
            self._count_outstanding(-1)
            self.hooks.on_finished(self, seq, now)
