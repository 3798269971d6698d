"""A request's life across the cluster and its residency on one engine.

`Request` is what the client sees: arrival, first token, completion, and where it ran.
`Sequence` is what one engine sees: tokens to hold KV for, tokens computed, tokens still to
emit. A monolithic request has one sequence; a disaggregated one has a sequence on its
prefill instance (emitting one token that the proxy discards) and one on its decode instance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

NAN = math.nan


@dataclass(slots=True, eq=False)
class Request:
    id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    status: str = "pending"          # pending | completed | rejected | failed
    reason: str = ""
    prefill_instance: int = -1
    decode_instance: int = -1
    prefill_start_s: float = NAN
    prefill_end_s: float = NAN
    transfer_start_s: float = NAN
    transfer_end_s: float = NAN
    first_token_s: float = NAN
    completion_s: float = NAN
    tokens_emitted: int = 0
    last_token_s: float = NAN
    itl_max_s: float = 0.0
    num_preemptions: int | float = 0   # a count; NaN where a real deployment does not report it
    kv_bytes_transferred: float = 0.0
    cached_prompt_tokens: int = 0    # prompt tokens found in the prefix cache (not computed)
    prefix_hashes: tuple[int, ...] = ()   # the prompt's prefix-block hashes, when the trace has them
    retries: int = 0                 # times the proxy resent it after an instance failure
    kv_recomputes: int | float = 0   # failed KV pulls recomputed on the decode instance; NaN as above

    def restart(self) -> None:
        """Resent from scratch after a failure: forget the lost attempt's progress."""
        self.prefill_start_s = self.prefill_end_s = NAN
        self.transfer_start_s = self.transfer_end_s = NAN
        self.prefill_instance = self.decode_instance = -1
        self.cached_prompt_tokens = 0


@dataclass(slots=True, eq=False)
class Sequence:
    """A request's state on one engine, in vLLM's terms.

    The engine computes KV for `num_tokens` = prompt + tokens emitted here; each step schedules
    some of the `num_tokens - num_computed` missing ones, and the step that completes them
    samples one new token. Preemption by recompute resets `num_computed` to 0.
    """

    request: Request
    prompt_tokens: int               # tokens whose KV this engine must hold before emitting
    max_new_tokens: int              # tokens this engine emits before the sequence is done
    num_computed: int = 0
    num_emitted: int = 0
    blocks: int = 0
    needs_remote_kv: bool = False    # decode side: prompt KV must be pulled before compute
    engine_id: int = -1
    _prefilled: bool = field(default=False, repr=False)

    @property
    def num_tokens(self) -> int:
        return self.prompt_tokens + self.num_emitted

    @property
    def finished(self) -> bool:
        return self.num_emitted >= self.max_new_tokens
