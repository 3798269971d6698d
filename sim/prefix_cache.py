"""Automatic prefix caching: which prompt-prefix blocks an instance still holds.

Traces such as Mooncake's identify each request's prompt by a chain of block hashes (one
per `block_tokens` tokens; equal hashes at the start of two prompts mean an equal prefix).
An instance that computed or received a prefix keeps its KV until memory pressure evicts
it, as vLLM's automatic prefix caching does with freed blocks (least recently used first).
A new request then skips the leading blocks the instance still holds: a prefill computes
only the rest, a decode instance pulls only the rest.

Memory is accounted conservatively: every request still allocates blocks for its whole
prompt (shared blocks are not deduplicated), and the cache holds at most the instance's KV
capacity. Under heavy memory pressure vLLM would evict sooner, so hit rates there are an
upper bound.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence as Seq


class PrefixCache:
    def __init__(self, capacity_tokens: int, block_tokens: int, kv_block_size: int):
        self.block_tokens = block_tokens
        self.kv_block_size = kv_block_size
        self.capacity_blocks = max(0, capacity_tokens // block_tokens)
        self._blocks: OrderedDict[int, None] = OrderedDict()   # least recently used first
        self.lookup_tokens = 0     # prompt tokens of the requests looked up
        self.hit_tokens = 0        # of which found in the cache

    def match(self, hashes: Seq[int]) -> int:
        """Leading blocks of `hashes` held here (a prefix chain stops at the first miss)."""
        matched = 0
        for block in hashes:
            if block not in self._blocks:
                break
            matched += 1
        return matched

    def cached_tokens(self, hashes: Seq[int], prompt_tokens: int) -> int:
        """Prompt tokens that need no compute or transfer: whole KV blocks, short of the last
        prompt token, which is always computed since its logits give the first output token."""
        whole_blocks = (prompt_tokens - 1) // self.kv_block_size * self.kv_block_size
        return min(self.match(hashes) * self.block_tokens, whole_blocks)

    def record_lookup(self, prompt_tokens: int, hit_tokens: int) -> None:
        self.lookup_tokens += prompt_tokens
        self.hit_tokens += hit_tokens

    def insert(self, hashes: Seq[int], prompt_tokens: int) -> None:
        """The full blocks of a prompt whose KV is now on this instance become most recent."""
        for block in hashes[: prompt_tokens // self.block_tokens]:
            self._blocks[block] = None
            self._blocks.move_to_end(block)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)

    def clear(self) -> None:
        """The instance failed: its KV is gone."""
        self._blocks.clear()

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0
