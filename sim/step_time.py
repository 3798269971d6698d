"""Execution time of one engine step, from FLOPs and bytes (a roofline per kernel class).

One step of a vLLM-like engine runs a forward pass over a batch that mixes prefill chunks
(each with the context already in cache) and decode sequences (one token each). For such a
batch, on one instance of `tp` GPUs:

* linear layers: 2 FLOPs per active parameter per token; the weights are read once per step
  (for a MoE model, only the experts that the batch's tokens route to);
* attention: 4 * q_size FLOPs per (query, key) pair per layer, causal inside a prefill chunk;
  every KV byte of the context is read once and every new token's KV is written once;
* lm_head: logits only for the sequences that sample a token this step;
* tensor parallelism: two all-reduces of the activations per layer (ring algorithm);
* a host overhead per step (scheduling, input preparation): a fixed part per step, and a part
  per sampled sequence (sampling, output processing, detokenising and streaming each token;
  `GPUSpec.seq_overhead_s`, 0 unless calibrated: it matters where the forward pass is short, as
  on a CPU with a tiny model).

Each kernel class takes max(compute time, memory time) with the calibrated efficiencies of
`Efficiency` (attention's KV reads with `kv_read`, which is `memory` unless calibrated apart);
the classes run one after another, so their times add. Activation traffic and element-wise ops
are left out: for the batch sizes of LLM serving they are a few percent of the GEMM and
attention traffic and are absorbed by the calibrated efficiencies.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.catalog import GPUSpec, ModelSpec

ACTIVATION_BYTES = 2  # bf16 activations in the all-reduce


@dataclass(frozen=True, slots=True)
class BatchShape:
    """What a step computes, summed over its sequences.

    A sequence that computes `n` tokens after `c` cached ones (a prefill chunk, or a decode
    step with n = 1) attends over n*c + n*(n+1)/2 (query, key) pairs and reads the KV of
    c + n tokens; prefill and decode differ only in these numbers.
    """

    tokens: int = 0             # tokens computed
    attention_pairs: int = 0    # causal (query, key) pairs
    kv_read_tokens: int = 0     # KV tokens read by attention
    sampled_seqs: int = 0       # sequences that produce logits this step

    @classmethod
    def of(cls, chunks: list[tuple[int, int]], sampled_seqs: int) -> "BatchShape":
        """From (tokens computed, tokens cached) per sequence."""
        tokens = pairs = kv = 0
        for n, c in chunks:   # one loop: this runs once per simulated step
            tokens += n
            pairs += chunk_attention_pairs(n, c)
            kv += n + c
        return cls(tokens, pairs, kv, sampled_seqs)


@dataclass(slots=True)
class StepCost:
    """Duration of a step and the work it did on the whole instance."""

    time_s: float
    flops: float
    bytes: float


def chunk_attention_pairs(chunk: int, context: int) -> int:
    """(query, key) pairs of a causal chunk of `chunk` tokens after `context` cached tokens."""
    return chunk * context + chunk * (chunk + 1) // 2


def experts_touched(model: ModelSpec, tokens: int) -> float:
    """Expected distinct experts per layer hit by `tokens` tokens under uniform top-k routing."""
    if not model.is_moe:
        return 1.0
    miss = (1.0 - model.experts_per_token / model.num_experts) ** tokens
    return model.num_experts * (1.0 - miss)


class StepTimeModel:
    """Pure cost model of one instance (a model on `tp` GPUs of one kind).

    Constants that do not depend on the batch are computed once here, so that `cost` stays
    cheap: it runs once per simulated step.
    """

    def __init__(self, model: ModelSpec, gpu: GPUSpec, tp: int):
        self.model, self.gpu, self.tp = model, gpu, tp
        eff = gpu.efficiency
        self._gemm_flops_per_s = gpu.peak_flops * eff.gemm * tp
        self._attention_flops_per_s = gpu.peak_flops * eff.attention * tp
        self._memory_bytes_per_s = gpu.memory_bandwidth * eff.memory * tp
        self._kv_read_bytes_per_s = gpu.memory_bandwidth * eff.kv_read_in_effect * tp
        self._linear_flops_per_token = 2.0 * model.active_params_per_token
        self._lm_head_flops_per_seq = 2.0 * model.hidden_size * model.vocab_size
        # KV heads beyond num_kv_heads are replicated, so each GPU reads its own copy.
        self._kv_bytes_per_token = model.kv_bytes_per_token * tp / model.kv_shards(tp)
        self._attention_constants = (4.0 * model.q_size * model.num_layers, self._attention_flops_per_s,
                                     self._kv_bytes_per_token, self._kv_read_bytes_per_s)
        lm_head_bytes = model.vocab_size * model.hidden_size * model.weight_bytes_per_param
        per_layer_dense = model.params_per_layer - model.num_experts * model.expert_params
        self._dense_weight_bytes = (model.num_layers * per_layer_dense * model.weight_bytes_per_param
                                    + lm_head_bytes)
        self._expert_bytes_all_layers = model.num_layers * model.expert_params * model.weight_bytes_per_param
        if tp > 1:
            # Ring all-reduce: every GPU sends and receives 2(tp-1)/tp of the buffer.
            self._allreduce_s_per_byte = 2.0 * (tp - 1) / tp / (gpu.nvlink_bandwidth * eff.nvlink)
            calls = 2 * model.num_layers
            self._allreduce_fixed_s = calls * gpu.allreduce_latency_s
            self._allreduce_s_per_token = calls * self._allreduce_s_per_byte * model.hidden_size * ACTIVATION_BYTES
        else:
            self._allreduce_s_per_byte = self._allreduce_fixed_s = self._allreduce_s_per_token = 0.0
        self._decode_constants: dict[int, tuple] = {}

    def weight_bytes_read(self, tokens: int) -> float:
        experts = experts_touched(self.model, tokens) if self.model.is_moe else 1.0
        return self._dense_weight_bytes + experts * self._expert_bytes_all_layers

    def cost(self, batch: BatchShape) -> StepCost:
        linear_s, linear_flops, weight_bytes = self._linear(batch.tokens, batch.sampled_seqs)
        attention_s, attention_flops, kv_bytes = self._attention(batch.attention_pairs, batch.kv_read_tokens,
                                                                 batch.tokens)
        time_s = linear_s + attention_s + self._allreduce(batch.tokens) + self._overhead(batch.sampled_seqs)
        return StepCost(time_s, linear_flops + attention_flops, weight_bytes + kv_bytes)

    def decode_step_constants(self, seqs: int) -> tuple:
        """The parts of a step of `seqs` decode sequences that stay the same while the batch does
        (`sim.decode_window` runs many such steps at once): linear seconds, FLOPs and weight bytes,
        all-reduce and host-overhead seconds, and the arguments of `attention_work` after the
        batch's own three. Kept per batch size: every decode window asks."""
        constants = self._decode_constants.get(seqs)
        if constants is None:
            constants = (*self._linear(seqs, seqs), self._allreduce(seqs), self._overhead(seqs),
                         self._attention_constants)
            self._decode_constants[seqs] = constants
        return constants

    def breakdown(self, batch: BatchShape) -> dict[str, float]:
        """Seconds of `cost(batch)` per kernel class (linear, attention, allreduce, overhead);
        they add up to its time. Calibration fits each class to what was measured of it."""
        return {"linear": self._linear(batch.tokens, batch.sampled_seqs)[0],
                "attention": self._attention(batch.attention_pairs, batch.kv_read_tokens, batch.tokens)[0],
                "allreduce": self._allreduce(batch.tokens),
                "overhead": self._overhead(batch.sampled_seqs)}

    def allreduce_time(self, nbytes: float) -> float:
        """One all-reduce of `nbytes` over the instance's GPUs (none without TP)."""
        if self.tp == 1:
            return 0.0
        return self.gpu.allreduce_latency_s + self._allreduce_s_per_byte * nbytes

    def _linear(self, tokens: int, sampled_seqs: int) -> tuple[float, float, float]:
        flops = self._linear_flops_per_token * tokens + self._lm_head_flops_per_seq * sampled_seqs
        weight_bytes = self.weight_bytes_read(tokens)
        return max(flops / self._gemm_flops_per_s, weight_bytes / self._memory_bytes_per_s), flops, weight_bytes

    def _attention(self, pairs: int, kv_read_tokens: int, tokens: int) -> tuple[float, float, float]:
        return attention_work(pairs, kv_read_tokens, tokens, *self._attention_constants)

    def _overhead(self, sampled_seqs: int) -> float:
        """Host seconds of a step: fixed, plus per sequence that samples a token."""
        return self.gpu.step_overhead_s + self.gpu.seq_overhead_s * sampled_seqs

    def _allreduce(self, tokens: int) -> float:
        return self._allreduce_fixed_s + self._allreduce_s_per_token * tokens

    def prefill_time(self, prompt_tokens: int) -> float:
        """A lone prompt computed in one step (and sampling its first token)."""
        return self.cost(BatchShape.of([(prompt_tokens, 0)], sampled_seqs=1)).time_s


def attention_work(pairs, kv_read_tokens, tokens, flops_per_pair, flops_per_s, kv_bytes_per_token, kv_bytes_per_s):
    """(seconds, FLOPs, bytes) of a step's attention over `pairs` causal (query, key) pairs:
    every KV token of the context is read, every new one written. Plain arithmetic on scalars,
    so that `sim.decode_window` can compile this same function for its loop. numba stays out of
    this module: `real.profile` imports it into a process that runs vLLM, whose kernel rebinding
    (vllm/triton_utils/dispatcher.py) fails on llvmlite's library wrapper once numba is loaded."""
    flops = flops_per_pair * pairs
    kv_bytes = kv_bytes_per_token * (kv_read_tokens + tokens)
    return max(flops / flops_per_s, kv_bytes / kv_bytes_per_s), flops, kv_bytes
