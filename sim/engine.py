"""One serving instance (a vLLM server on `tp` GPUs) as a SimPy process.

The loop is vLLM's: schedule a batch, run it for the step time the cost model gives, then
account for the tokens it computed. Requests that arrive during a step are seen by the next
schedule. An engine with nothing to run sleeps until a sequence arrives, remote KV lands or
held blocks are freed.

The engine does not know the cluster around it; it reports through three callbacks:
`on_token(engine, seq, now)` for every token a sequence samples,
`on_finished(engine, seq, now)` when a sequence has emitted all its tokens, and
`start_pull(engine, seq)` on a decode instance when a sequence's prompt KV may be pulled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import simpy

from sim.kv_cache import BlockPool
from sim.request import Sequence
from sim.scheduler import Scheduler, SchedulerLimits, ScheduledStep
from sim.step_time import BatchShape, StepTimeModel
from sim.utilisation import UtilisationTimeline

Callback = Callable[["Engine", Sequence, float], None]

MIXED, PREFILL, DECODE = "mixed", "prefill", "decode"


@dataclass(slots=True)
class EngineHooks:
    on_token: Callback
    on_finished: Callback
    start_pull: Callable[["Engine", Sequence], None] | None = None


class Engine:
    """A vLLM-like engine with role `mixed` (monolithic), `prefill` or `decode`.

    A prefill engine keeps the blocks of a finished sequence until `release_held` is called
    (the decode side has pulled them).
    """

    def __init__(self, env: simpy.Environment, instance_id: int, role: str, tp: int,
                 limits: SchedulerLimits, kv_pool: BlockPool, step_model: StepTimeModel,
                 hooks: EngineHooks, utilisation: UtilisationTimeline):
        self.env = env
        self.instance_id = instance_id
        self.role = role
        self.tp = tp
        self.kv = kv_pool
        self.step_model = step_model
        self.scheduler = Scheduler(limits, kv_pool)
        self.hooks = hooks
        self.utilisation = utilisation
        self.outstanding = 0          # sequences submitted and not finished
        self.steps = 0
        self._wakeup: simpy.Event | None = None
        env.process(self._run())

    def submit(self, seq: Sequence) -> None:
        seq.engine_id = self.instance_id
        self.outstanding += 1
        self.scheduler.add(seq)
        self._wake()

    def kv_received(self, seq: Sequence) -> None:
        self.scheduler.kv_received(seq)
        self._wake()

    def release_held(self, seq: Sequence) -> None:
        self.scheduler.release(seq)
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.triggered:
            self._wakeup.succeed()

    def _run(self):
        env = self.env
        while True:
            step = self.scheduler.schedule()
            for seq in step.pulls:
                self.hooks.start_pull(self, seq)
            if not step.seqs:
                if step.preempted:
                    continue
                self._wakeup = env.event()
                yield self._wakeup
                self._wakeup = None
                continue
            start = env.now
            self._mark_prefill_start(step, start)
            cost = self.step_model.cost(self._shape(step))
            yield env.timeout(cost.time_s)
            self.steps += 1
            self.utilisation.add(start, env.now, cost.flops, cost.bytes)
            self._complete(step, env.now)

    def _mark_prefill_start(self, step: ScheduledStep, now: float) -> None:
        if self.role == DECODE:
            return
        for seq in step.seqs:
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
            for seq in self.scheduler.remove_finished(hold_blocks=self.role == PREFILL):
                self.outstanding -= 1
                self.hooks.on_finished(self, seq, now)
