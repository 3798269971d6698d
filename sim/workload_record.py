"""The `Workload` record: the contract between trace readers, load shaping and the simulator.

A workload is a list of requests sorted by arrival, held column-wise in read-only numpy
arrays. Optionally it carries each request's prompt-prefix block hashes (Mooncake's
`hash_ids`), stored flat: request i's blocks are
`prefix_block_hashes[prefix_block_offsets[i]:prefix_block_offsets[i + 1]]` (use
`blocks_of(i)`), each block covering `prefix_block_tokens` prompt tokens. Two requests
whose first k hashes agree share their first k * prefix_block_tokens prompt tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class WorkloadError(ValueError):
    """A workload config or trace file the user has to fix; the message says how."""


def _frozen(values, dtype) -> np.ndarray:
    a = np.array(values, dtype=dtype)   # private copy, then freeze
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival; the first arrives at 0.0 s. Arrays are read-only.

    Prefix hashes are all three of (hashes, offsets, block tokens) or none of them.
    """

    name: str
    arrival_s: np.ndarray      # float64, ascending, arrival_s[0] == 0.0
    prompt_tokens: np.ndarray  # int64, >= 1
    output_tokens: np.ndarray  # int64, >= 1
    source: str                # where the requests come from, with attribution and what was changed
    prefix_block_hashes: np.ndarray | None = None   # int64, every request's block hashes, concatenated
    prefix_block_offsets: np.ndarray | None = None  # int64, len n + 1, ascending, [0] == 0, [-1] == len(hashes)
    prefix_block_tokens: int | None = None           # prompt tokens per hashed block (512 for Mooncake)

    def __post_init__(self) -> None:
        for field, dtype in {"arrival_s": np.float64, "prompt_tokens": np.int64, "output_tokens": np.int64}.items():
            object.__setattr__(self, field, _frozen(getattr(self, field), dtype))
        n = len(self.arrival_s)
        if n == 0 or len(self.prompt_tokens) != n or len(self.output_tokens) != n:
            raise WorkloadError(f"workload '{self.name}': needs >= 1 request and equal-length arrays")
        if self.arrival_s[0] != 0.0 or not np.all(np.diff(self.arrival_s) >= 0):  # also rejects NaN
            raise WorkloadError(f"workload '{self.name}': arrivals must be ascending from 0.0")
        if self.prompt_tokens.min() < 1 or self.output_tokens.min() < 1:
            raise WorkloadError(f"workload '{self.name}': token counts must be >= 1")
        self._check_prefix_blocks(n)

    def _check_prefix_blocks(self, n: int) -> None:
        parts = (self.prefix_block_hashes, self.prefix_block_offsets, self.prefix_block_tokens)
        if all(p is None for p in parts):
            return
        if any(p is None for p in parts):
            raise WorkloadError(f"workload '{self.name}': prefix_block_hashes, prefix_block_offsets and "
                                "prefix_block_tokens go together")
        hashes = _frozen(self.prefix_block_hashes, np.int64)
        offsets = _frozen(self.prefix_block_offsets, np.int64)
        object.__setattr__(self, "prefix_block_hashes", hashes)
        object.__setattr__(self, "prefix_block_offsets", offsets)
        if (len(offsets) != n + 1 or offsets[0] != 0 or offsets[-1] != len(hashes)
                or not np.all(np.diff(offsets) >= 0)):
            raise WorkloadError(f"workload '{self.name}': prefix_block_offsets must be n + 1 ascending "
                                "offsets from 0 to len(prefix_block_hashes)")
        if int(self.prefix_block_tokens) < 1:
            raise WorkloadError(f"workload '{self.name}': prefix_block_tokens must be >= 1")

    @property
    def duration_s(self) -> float:
        """Last arrival minus first arrival (0.0 for fewer than two requests)."""
        return float(self.arrival_s[-1] - self.arrival_s[0]) if len(self) > 1 else 0.0

    def __len__(self) -> int:
        return len(self.arrival_s)

    @property
    def has_prefix_blocks(self) -> bool:
        return self.prefix_block_hashes is not None

    def blocks_of(self, i: int) -> np.ndarray:
        """Request i's prefix-block hashes in prompt order (a read-only view; empty without hashes)."""
        if self.prefix_block_offsets is None:
            return np.empty(0, np.int64)
        return self.prefix_block_hashes[self.prefix_block_offsets[i]:self.prefix_block_offsets[i + 1]]

    def block_counts(self) -> np.ndarray:
        """Number of hashed blocks of each request (zeros without hashes)."""
        if self.prefix_block_offsets is None:
            return np.zeros(len(self), np.int64)
        return np.diff(self.prefix_block_offsets)

    def select(self, rows: np.ndarray, arrival_s: np.ndarray, note: str,
               prompt_tokens: np.ndarray | None = None, output_tokens: np.ndarray | None = None,
               hash_shift: np.ndarray | None = None) -> Workload:
        """A new workload of requests `rows` (in that order) arriving at `arrival_s`, which must
        be ascending from 0. Token counts may be replaced; `hash_shift` (per selected row) is added
        to that row's block hashes so that copies of a request do not share prefixes. A row keeps
        only the blocks its (possibly shortened) prompt still covers. `note` is appended to
        `source` to say what changed."""
        rows = np.asarray(rows, np.int64)
        prompt = self.prompt_tokens[rows] if prompt_tokens is None else prompt_tokens
        output = self.output_tokens[rows] if output_tokens is None else output_tokens
        hashes = offsets = None
        if self.has_prefix_blocks:
            hashes, offsets = gather_blocks(self.prefix_block_hashes, self.prefix_block_offsets, rows,
                                            -(-np.asarray(prompt, np.int64) // self.prefix_block_tokens))
            if hash_shift is not None:
                hashes = hashes + np.repeat(hash_shift, np.diff(offsets))
        return Workload(self.name, arrival_s, prompt, output, f"{self.source}, {note}" if note else self.source,
                        hashes, offsets, self.prefix_block_tokens)


def gather_blocks(hashes: np.ndarray, offsets: np.ndarray, rows: np.ndarray,
                  max_blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat (hashes, offsets) of requests `rows`, in that order, each keeping at most its
    `max_blocks` first blocks (the blocks its prompt still covers)."""
    starts = offsets[rows]
    counts = np.minimum(offsets[rows + 1] - starts, max_blocks)
    new_offsets = np.concatenate([[0], np.cumsum(counts)])
    gather = np.repeat(starts - new_offsets[:-1], counts) + np.arange(new_offsets[-1])
    return hashes[gather], new_offsets
