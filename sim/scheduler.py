"""The per-step decision of one engine, after vLLM v1's scheduler.

Each step has a budget of `max_num_batched_tokens`. Running sequences are served first, in
order, each taking the tokens it is missing (one for a decode, a chunk for a prefill); when
the KV blocks for them run out, the most recently admitted running sequence is preempted by
recompute (its blocks freed, its progress forgotten, put back at the head of the queue). If
nothing was preempted, waiting sequences are admitted in FCFS order while budget, the
`max_num_seqs` cap and free blocks allow; the first one that does not fit stops admission.

On a decode instance of a disaggregated cluster, a sequence whose prompt KV lives on a
prefill instance is admitted by reserving blocks for the whole prompt and starting the pull;
it uses no token budget and joins the ready queue when its KV has arrived, to compute the
last prompt token (which samples the first output token), as vLLM's NixlConnector does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sim.kv_cache import BlockPool, blocks_for
from sim.prefix_cache import PrefixCache
from sim.request import Sequence


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    max_num_seqs: int
    max_num_batched_tokens: int
    chunked_prefill: bool
    block_size: int


class ScheduledStep:
    """What one schedule decided: the batch (`seqs`, with the tokens each computes), and the pulls
    and preemptions it made."""

    def __init__(self) -> None:   # not a dataclass: mypyc compiles a written __init__, not a generated one
        self.seqs: list[Sequence] = []
        self.tokens: list[int] = []
        self.pulls: list[Sequence] = []        # KV pulls to start now
        self.preempted: list[Sequence] = []
        self.admitted = 0          # the last `admitted` of `seqs` came from the queues this step

    def add(self, seq: Sequence, tokens: int) -> None:
        self.seqs.append(seq)
        self.tokens.append(tokens)


class Scheduler:
    """Queues of one engine; `schedule` picks the next step's batch and allocates its blocks."""

    def __init__(self, limits: SchedulerLimits, pool: BlockPool, prefix_cache: PrefixCache | None = None):
        self.limits = limits
        self.pool = pool
        self.prefix_cache = prefix_cache
        self.running: list[Sequence] = []
        self.waiting: deque[Sequence] = deque()
        self.ready: deque[Sequence] = deque()   # remote KV arrived, not yet running
        self.pulling: set[Sequence] = set()     # blocks reserved, remote KV on its way

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def kv_received(self, seq: Sequence) -> None:
        self.pulling.discard(seq)
        seq.num_computed = seq.prompt_tokens - 1
        self.ready.append(seq)

    def kv_failed(self, seq: Sequence) -> None:
        self.pulling.discard(seq)
        seq.num_computed = 0
        self.ready.append(seq)

    @property
    def num_queued(self) -> int:
        return len(self.waiting) + len(self.ready)

    def schedule(self) -> ScheduledStep:
        step = ScheduledStep()
        budget = self.limits.max_num_batched_tokens
        if self.running:
            budget = self._schedule_running(step, budget)
        if (self.ready or self.waiting) and not step.preempted:   # most schedules have nothing queued
            self._admit_waiting(step, budget)
        return step

    def remove_finished(self, hold_blocks: bool) -> list[Sequence]:
        """Drop finished sequences from `running`; free their blocks unless the caller holds them."""
        done: list[Sequence] = []
        running: list[Sequence] = []
        for seq in self.running:
            (done if seq.finished else running).append(seq)
        self.running = running
        if not hold_blocks:
            for seq in done:
                self.release(seq)
        return done

    def release(self, seq: Sequence) -> None:
        self.pool.release(seq.blocks)
        seq.blocks = 0

    def _tokens_to_schedule(self, seq: Sequence, budget: int) -> int:
        """Missing tokens capped by the budget; 0 if the prompt may not be split and does not fit."""
        missing = seq.num_tokens - seq.num_computed
        if missing <= budget:
            return missing
        return budget if self.limits.chunked_prefill else 0

    def _blocks_needed(self, seq: Sequence, tokens: int) -> int:
        return blocks_for(seq.num_computed + tokens, self.limits.block_size) - seq.blocks

    def _schedule_running(self, step: ScheduledStep, budget: int) -> int:
        running, pool = self.running, self.pool
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            tokens = self._tokens_to_schedule(seq, budget)
            if tokens == 0:
                i += 1
                continue
            need = self._blocks_needed(seq, tokens)
            if need:   # most decode steps stay within their last block
                while need > pool.free:
                    victim = running.pop()
                    self._preempt(victim)
                    step.preempted.append(victim)
                    if victim is seq:
                        return budget
                pool.allocate(need)
                seq.blocks += need
            step.add(seq, tokens)
            budget -= tokens
            i += 1
        return budget

    def _admit_waiting(self, step: ScheduledStep, budget: int) -> None:
        limits, pool = self.limits, self.pool
        while budget > 0 and len(self.running) < limits.max_num_seqs:
            queue = self.ready if self.ready else self.waiting
            if not queue:
                return
            seq = queue[0]
            if seq.needs_remote_kv:
                blocks = self.pull_blocks(seq)
                if blocks > pool.free:
                    return
                self._start_pull(queue.popleft(), blocks)
                step.pulls.append(seq)
                continue
            starts_prefill = seq.num_computed == 0   # new, or restarting after preemption
            cached = self._cached_prefix(seq) if starts_prefill else 0
            seq.num_computed += cached
            tokens = self._tokens_to_schedule(seq, budget)
            need = self._blocks_needed(seq, tokens)
            if tokens == 0 or need > pool.free:
                seq.num_computed -= cached
                return
            if starts_prefill and self.prefix_cache is not None:
                self.prefix_cache.record_lookup(seq.prompt_tokens, cached)
                seq.request.cached_prompt_tokens = cached
            pool.allocate(need)
            seq.blocks += need
            queue.popleft()
            self.running.append(seq)
            step.add(seq, tokens)
            step.admitted += 1
            budget -= tokens

    def pulls_while_decoding(self, free_blocks: int) -> list[Sequence] | None:
        """The pulls the next `schedule` would start, as long as the running batch decodes
        unchanged and leaves `free_blocks` free: the waiting pulls at the head of the queue that
        fit, in order. None when that schedule could do more than start pulls (a sequence
        ready to run, or one to compute here at the head of the queue)."""
        limits = self.limits
        if self.ready:
            return None
        if len(self.running) >= min(limits.max_num_seqs, limits.max_num_batched_tokens):
            return []   # no token budget or sequence slot left: admission does not start
        pulls = []
        for seq in self.waiting:
            if not seq.needs_remote_kv:
                return None
            need = self.pull_blocks(seq)
            if need > free_blocks:
                break
            free_blocks -= need
            pulls.append(seq)
        return pulls

    def start_pulls(self, seqs: list[Sequence]) -> None:
        """Start `seqs`, the head of the waiting queue as `pulls_while_decoding` gave it."""
        for seq in seqs:
            assert self.waiting[0] is seq
            self._start_pull(self.waiting.popleft(), self.pull_blocks(seq))

    def pull_blocks(self, seq: Sequence) -> int:
        """Blocks reserved for a sequence's pulled prompt."""
        return blocks_for(seq.prompt_tokens, self.limits.block_size)

    def _start_pull(self, seq: Sequence, blocks: int) -> None:
        """Reserve `blocks` (`pull_blocks(seq)`) for the whole prompt; the remote KV lands in them."""
        seq.blocks = blocks
        self.pool.allocate(blocks)
        seq.needs_remote_kv = False
        self.pulling.add(seq)

    def _cached_prefix(self, seq: Sequence) -> int:
        """Prompt tokens a sequence starting its prefill may skip."""
        if self.prefix_cache is None or not seq.request.prefix_hashes:
            return 0
        return self.prefix_cache.cached_tokens(seq.request.prefix_hashes, seq.prompt_tokens)

    def _preempt(self, seq: Sequence) -> None:
        self.release(seq)
        seq.num_computed = 0
        seq.request.num_preemptions += 1
        self.waiting.appendleft(seq)
