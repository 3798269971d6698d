"""Paged KV cache of one instance: a pool of fixed-size blocks, sized from GPU memory.

Capacity follows vLLM's rule: per GPU, `gpu_memory_utilization` of the device memory, minus
this GPU's share of the weights, minus a reserve for activations, CUDA graphs and the
communication buffers, is carved into blocks of `block_size` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.catalog import GPUSpec, ModelSpec

GIB = 1024**3


def kv_block_bytes_per_gpu(model: ModelSpec, tp: int, block_size: int) -> float:
    return block_size * model.kv_bytes_per_token / model.kv_shards(tp)


def kv_bytes_per_gpu(model: ModelSpec, gpu: GPUSpec, tp: int,
                     gpu_memory_utilization: float, reserve_gib: float) -> float:
    """Bytes left for KV on each GPU of a `tp`-way instance (negative when weights do not fit)."""
    return gpu.memory_bytes * gpu_memory_utilization - model.weight_bytes / tp - reserve_gib * GIB


def num_kv_blocks(model: ModelSpec, gpu: GPUSpec, tp: int, block_size: int,
                  gpu_memory_utilization: float, reserve_gib: float) -> int:
    free = kv_bytes_per_gpu(model, gpu, tp, gpu_memory_utilization, reserve_gib)
    return max(0, int(free // kv_block_bytes_per_gpu(model, tp, block_size)))


def blocks_for(tokens: int, block_size: int) -> int:
    return -(-tokens // block_size)


@dataclass(slots=True)
class BlockPool:
    """Counts of free and used blocks; the engine owns which sequence holds how many.

    With a `usage_mirror`, the share in use is also written to `usage_mirror[mirror_slot]`
    whenever it changes (a router's `sim.router.LoadBoard` reads it there)."""

    capacity: int
    block_size: int
    used: int = 0
    peak_used: int = 0
    usage_mirror: np.ndarray | None = None
    mirror_slot: int = 0

    @property
    def free(self) -> int:
        return self.capacity - self.used

    @property
    def usage(self) -> float:
        return self.used / self.capacity

    def allocate(self, blocks: int) -> None:
        if blocks > self.capacity - self.used:
            raise RuntimeError(f"KV over-allocation: {blocks} blocks asked, {self.free} free")
        if blocks:
            self.used += blocks
            if self.used > self.peak_used:
                self.peak_used = self.used
            if self.usage_mirror is not None:   # inline, not a helper: this runs at most allocations
                self.usage_mirror[self.mirror_slot] = self.used / self.capacity

    def release(self, blocks: int) -> None:
        self.used -= blocks
        if self.usage_mirror is not None:
            self.usage_mirror[self.mirror_slot] = self.used / self.capacity
