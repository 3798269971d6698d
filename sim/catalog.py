"""Catalogue entries as typed records: a model's architecture, a GPU's datasheet, a KV link.

The records are built from the Hydra config groups `model/`, `hardware/` and `network/`;
the YAML files carry the source of every figure. Derived quantities (parameter count,
weight bytes, KV bytes per token) are computed here from the architecture, never typed in.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_model_len: int
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    num_experts: int = 1
    experts_per_token: int = 1
    weight_bytes_per_param: float = 2.0
    kv_bytes_per_element: float = 2.0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attention_params_per_layer(self) -> int:
        h = self.hidden_size
        bias = (self.q_size + 2 * self.kv_size) if self.attention_bias else 0
        return h * self.q_size + 2 * h * self.kv_size + bias + self.q_size * h

    @property
    def expert_params(self) -> int:
        """One SwiGLU MLP: gate, up and down projections."""
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def params_per_layer(self) -> int:
        router = self.hidden_size * self.num_experts if self.is_moe else 0
        norms = 2 * self.hidden_size
        return self.attention_params_per_layer + self.num_experts * self.expert_params + router + norms

    @property
    def embedding_params(self) -> int:
        heads = 1 if self.tie_word_embeddings else 2
        return heads * self.vocab_size * self.hidden_size

    @property
    def num_params(self) -> int:
        return self.num_layers * self.params_per_layer + self.embedding_params + self.hidden_size

    @property
    def weight_bytes(self) -> float:
        return self.num_params * self.weight_bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V for every layer; GQA shrinks it by num_attention_heads / num_kv_heads."""
        return 2 * self.num_layers * self.kv_size * self.kv_bytes_per_element

    def kv_shards(self, tp: int) -> int:
        """GPUs over which one token's KV is split; beyond num_kv_heads, heads are replicated."""
        return min(tp, self.num_kv_heads)

    @property
    def active_params_per_token(self) -> int:
        """Parameters one token multiplies through (excluding the embedding lookup and lm_head)."""
        router = self.hidden_size * self.num_experts if self.is_moe else 0
        per_layer = self.attention_params_per_layer + self.experts_per_token * self.expert_params + router
        return self.num_layers * per_layer


@dataclass(frozen=True, slots=True)
class Efficiency:
    """Fractions of datasheet peaks that kernels reach; fitted by calibration."""

    gemm: float
    attention: float
    memory: float
    nvlink: float
    # Attention's reads of the KV cache, where they bound it (decode): None = `memory`. A kernel that
    # gathers scattered blocks, or converts each element (bf16 on a core without bf16 arithmetic),
    # reaches less of the bandwidth than the linear layers' streaming weight reads.
    kv_read: float | None = None

    @property
    def kv_read_in_effect(self) -> float:
        return self.memory if self.kv_read is None else self.kv_read


@dataclass(frozen=True, slots=True)
class GPUSpec:
    name: str
    peak_flops: float          # FLOP/s, dense bf16
    memory_bytes: float        # B
    memory_bandwidth: float    # B/s
    nvlink_bandwidth: float    # B/s per GPU per direction
    gpus_per_node: int
    price_per_hour: float      # USD per GPU-hour
    efficiency: Efficiency
    allreduce_latency_s: float
    step_overhead_s: float
    seq_overhead_s: float = 0.0   # host seconds per sequence sampled in a step (0: not modelled)
    # Seconds a server's front end (API server) adds to each request it is sent: receiving and tokenising
    # it, handing it to the engine, and streaming its first token back (0: not modelled).
    frontend_s: float = 0.0


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """The network that carries KV from prefill to decode instances."""

    name: str
    bandwidth: float           # B/s per endpoint
    shared_by: str             # "gpu": one endpoint per GPU; "node": one per node
    efficiency: float
    latency_s: float           # fixed cost per transfer
    proxy_hop_s: float         # one HTTP hop through the router/proxy
    # True: the source instance serves a pull only between its engine steps (NIXL over UCX with its
    # progress thread off: the prefill engine's own loop progresses the transfer), so a pull that finds
    # the source mid-step starts when that step ends. False: the source does no work (RDMA read).
    served_between_steps: bool = False

    def endpoint_bandwidth(self, tp: int, gpus_per_node: int) -> float:
        """Achievable B/s into or out of one instance of `tp` GPUs."""
        endpoints = tp if self.shared_by == "gpu" else max(1, tp // gpus_per_node)
        return endpoints * self.bandwidth * self.efficiency


def _fields(cls: type, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The dataclass's fields taken from `cfg`; extra keys (sources, notes) are ignored."""
    required = [f.name for f in fields(cls) if f.default is MISSING]
    missing = [name for name in required if name not in cfg]
    if missing:
        raise KeyError(f"{cls.__name__} config lacks {missing}")
    return {f.name: cfg[f.name] for f in fields(cls) if f.name in cfg}


def model_from_config(cfg: Mapping[str, Any]) -> ModelSpec:
    return ModelSpec(**_fields(ModelSpec, cfg))


# What a named calibration sets in a hardware entry (same keys, same layout).
CALIBRATED = ("efficiency", "allreduce_latency_s", "step_overhead_s", "seq_overhead_s", "frontend_s")


def load_config(group: str, name: str) -> dict[str, Any]:
    """configs/<group>/<name>.yaml as plain containers."""
    path = CONFIG_DIR / group / f"{name}.yaml"
    if not path.is_file():
        names = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"no {group} entry {name!r} ({path} does not exist); choose one of {names}")
    return yaml.safe_load(path.read_text())


def gpu_from_config(cfg: Mapping[str, Any]) -> GPUSpec:
    """A hardware entry; with `calibration: <name>` set, the efficiencies and latencies come from
    configs/calibration/<name>.yaml (written by `python -m sim.calibrate`) instead of the entry."""
    if cfg.get("calibration"):
        fitted = load_config("calibration", cfg["calibration"])
        if fitted.get("hardware") != cfg["name"]:
            raise ValueError(f"hardware {cfg['name']!r} names calibration {cfg['calibration']!r}, "
                             f"which was fitted for {fitted.get('hardware')!r}")
        cfg = {**cfg, **{key: fitted[key] for key in CALIBRATED if key in fitted}}
    values = _fields(GPUSpec, cfg)
    values["efficiency"] = Efficiency(**_fields(Efficiency, cfg["efficiency"]))
    return GPUSpec(**values)


def link_from_config(cfg: Mapping[str, Any]) -> LinkSpec:
    return LinkSpec(**_fields(LinkSpec, cfg))
