"""From the Hydra config to a checked cluster plan, refused before the run when impossible.

Every check says what to change. The checks mirror what vLLM itself refuses at start-up
(weights that do not fit, a KV cache smaller than one request of `max_model_len`, a TP degree
that does not divide the heads, a prompt budget smaller than the context without chunked
prefill) plus what makes no sense for a cluster (a pool with no instances).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from sim.catalog import GPUSpec, LinkSpec, ModelSpec, gpu_from_config
from sim.engine import DECODE, MIXED, PREFILL
from sim.kv_cache import GIB, blocks_for, kv_bytes_per_gpu, num_kv_blocks
from sim.router import POLICIES
from sim.scheduler import SchedulerLimits

ARCHITECTURES = ("monolithic", "disaggregated")


class ConfigError(ValueError):
    """A configuration that cannot run; the message says what to change."""


@dataclass(frozen=True, slots=True)
class PoolSpec:
    role: str                 # mixed | prefill | decode
    instances: int
    tp: int
    router: str
    gpu: GPUSpec
    limits: SchedulerLimits
    kv_blocks: int            # per instance
    max_model_len: int
    prefix_caching: bool = True

    @property
    def num_gpus(self) -> int:
        return self.instances * self.tp

    @property
    def kv_tokens(self) -> int:
        return self.kv_blocks * self.limits.block_size


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    architecture: str
    model: ModelSpec
    pools: tuple[PoolSpec, ...]
    link: LinkSpec

    @property
    def num_gpus(self) -> int:
        return sum(p.num_gpus for p in self.pools)

    @property
    def cost_per_hour(self) -> float:
        return sum(p.num_gpus * p.gpu.price_per_hour for p in self.pools)

    @property
    def max_model_len(self) -> int:
        """The longest request (prompt + output) that every pool accepts."""
        return min(p.max_model_len for p in self.pools)

    def pool(self, role: str) -> PoolSpec:
        return next(p for p in self.pools if p.role == role)


def cluster_spec(serving: Mapping[str, Any], model: ModelSpec, gpu: GPUSpec, link: LinkSpec,
                 where: str = "serving") -> ClusterSpec:
    """The plan for one architecture; `serving` is one `serving/` config (not `compare`),
    found at `where` in the whole config (named in error messages)."""
    architecture = serving.get("architecture")
    if architecture == "monolithic":
        pools = (pool_spec(where, serving, MIXED, model, gpu),)
    elif architecture == "disaggregated":
        pools = tuple(pool_spec(f"{where}.{role}", serving.get(role) or {}, role, model, gpu)
                      for role in (PREFILL, DECODE))
    else:
        raise ConfigError(f"{where}.architecture is {architecture!r}; choose one of {ARCHITECTURES} "
                          f"(or serving=compare for both)")
    return ClusterSpec(architecture, model, pools, link)


def pool_spec(where: str, cfg: Mapping[str, Any], role: str, model: ModelSpec, gpu: GPUSpec) -> PoolSpec:
    """`gpu` unless the pool names its own `hardware` (a hardware/ config as a mapping): pools of
    different GPUs, e.g. H100 prefill and A100 decode."""
    if cfg.get("hardware") is not None:
        gpu = gpu_from_config(cfg["hardware"])
    instances = int(cfg.get("instances", 0))
    tp = int(cfg.get("tp", 1))
    router = cfg.get("router", "round_robin")
    engine = cfg.get("engine") or {}
    if instances < 1:
        hint = " or use serving=monolithic" if role != MIXED else ""
        raise ConfigError(f"{where}.instances is {instances}: a {role} pool needs at least one instance; "
                          f"set {where}.instances>=1{hint}")
    if router not in POLICIES:
        raise ConfigError(f"{where}.router is {router!r}; choose one of {POLICIES}")
    check_tensor_parallel(where, model, gpu, tp)

    limits = SchedulerLimits(max_num_seqs=int(engine.get("max_num_seqs", 256)),
                             max_num_batched_tokens=int(engine.get("max_num_batched_tokens", 8192)),
                             chunked_prefill=bool(engine.get("chunked_prefill", True)),
                             block_size=int(engine.get("block_size", 16)))
    for name in ("max_num_seqs", "max_num_batched_tokens", "block_size"):
        if getattr(limits, name) < 1:
            raise ConfigError(f"{where}.engine.{name} is {getattr(limits, name)}; it must be at least 1")
    max_model_len = int(engine.get("max_model_len") or model.max_model_len)
    if max_model_len > model.max_model_len:
        raise ConfigError(f"{where}.engine.max_model_len={max_model_len} exceeds {model.name}'s context "
                          f"of {model.max_model_len} tokens; lower it")
    if not limits.chunked_prefill and limits.max_num_batched_tokens < max_model_len:
        raise ConfigError(f"{where}.engine: without chunked prefill a whole prompt must fit one step, but "
                          f"max_num_batched_tokens={limits.max_num_batched_tokens} < max_model_len={max_model_len}; "
                          f"enable chunked_prefill, raise max_num_batched_tokens or lower max_model_len")

    utilisation = float(engine.get("gpu_memory_utilization", 0.9))
    reserve_gib = float(engine.get("reserve_gib", 0.0))
    if not 0 < utilisation <= 1:
        raise ConfigError(f"{where}.engine.gpu_memory_utilization is {utilisation}; it must be in (0, 1]")
    check_memory(where, model, gpu, tp, utilisation, reserve_gib)
    kv_blocks = num_kv_blocks(model, gpu, tp, limits.block_size, utilisation, reserve_gib)
    if kv_blocks < blocks_for(max_model_len, limits.block_size):
        fits = kv_blocks * limits.block_size
        raise ConfigError(f"{where}: the KV cache of one instance holds {fits} tokens, fewer than one request of "
                          f"max_model_len={max_model_len}; set {where}.engine.max_model_len<={fits}, "
                          f"raise {where}.tp or gpu_memory_utilization, or pick a GPU with more memory")
    return PoolSpec(role, instances, tp, router, gpu, limits, kv_blocks, max_model_len,
                    bool(engine.get("enable_prefix_caching", True)))


def check_tensor_parallel(where: str, model: ModelSpec, gpu: GPUSpec, tp: int) -> None:
    if tp < 1:
        raise ConfigError(f"{where}.tp is {tp}; it must be at least 1")
    if model.num_attention_heads % tp:
        raise ConfigError(f"{where}.tp={tp} does not divide {model.name}'s {model.num_attention_heads} attention "
                          f"heads; choose a divisor of {model.num_attention_heads}")
    if model.num_kv_heads % tp and tp % model.num_kv_heads:
        raise ConfigError(f"{where}.tp={tp} neither divides nor is a multiple of {model.name}'s "
                          f"{model.num_kv_heads} KV heads; choose a divisor or multiple of {model.num_kv_heads}")
    if tp > gpu.gpus_per_node:
        raise ConfigError(f"{where}.tp={tp} spans more than one {gpu.name} node of {gpu.gpus_per_node} GPUs; "
                          f"tensor parallelism across nodes is not modelled: use tp<={gpu.gpus_per_node}")


def check_memory(where: str, model: ModelSpec, gpu: GPUSpec, tp: int, utilisation: float, reserve_gib: float) -> None:
    if kv_bytes_per_gpu(model, gpu, tp, utilisation, reserve_gib) > 0:
        return
    per_gpu = model.weight_bytes / tp / GIB
    usable = gpu.memory_bytes * utilisation / GIB - reserve_gib
    min_tp = next((t for t in (2, 4, 8) if t > tp and model.weight_bytes / t / GIB < usable), None)
    hint = f"raise {where}.tp to {min_tp}" if min_tp else "pick a GPU with more memory"
    raise ConfigError(f"{where}: {model.name} needs {per_gpu:.1f} GiB of weights per GPU at tp={tp}, but a "
                      f"{gpu.name} offers {usable:.1f} GiB (memory x gpu_memory_utilization - reserve_gib) "
                      f"with nothing left for KV; {hint}")
