"""The step-time model: roofline arithmetic with units, checked against hand computations."""

import pytest

from sim.step_time import BatchShape, StepTimeModel, chunk_attention_pairs, experts_touched


def test_prefill_time_is_compute_bound_roofline(llama8b, h100):
    model = StepTimeModel(llama8b, h100, tp=1)
    prompt = 4096
    eff = h100.efficiency
    linear_flops = 2 * llama8b.active_params_per_token * prompt + 2 * llama8b.hidden_size * llama8b.vocab_size
    attention_flops = 4 * llama8b.q_size * llama8b.num_layers * prompt * (prompt + 1) / 2
    expected = (linear_flops / (h100.peak_flops * eff.gemm)
                + attention_flops / (h100.peak_flops * eff.attention)
                + h100.step_overhead_s)
    assert model.prefill_time(prompt) == pytest.approx(expected, rel=1e-12)


def test_small_decode_step_is_bound_by_reading_the_weights(llama8b, h100):
    model = StepTimeModel(llama8b, h100, tp=1)
    cost = model.cost(BatchShape.of([(1, 100)], sampled_seqs=1))
    weight_read_s = model.weight_bytes_read(1) / (h100.memory_bandwidth * h100.efficiency.memory)
    # ~15 GB of bf16 weights (all but the input embedding table, which is only indexed) at ~2.7 TB/s:
    # about 5.6 ms, plus a small KV read and the host overhead
    embedding_bytes = llama8b.vocab_size * llama8b.hidden_size * 2
    assert weight_read_s == pytest.approx((llama8b.weight_bytes - embedding_bytes) / (3.35e12 * h100.efficiency.memory),
                                          rel=1e-3)
    assert weight_read_s < cost.time_s < weight_read_s * 1.01 + h100.step_overhead_s


def test_decode_cost_grows_with_context_and_batch(llama8b, h100):
    model = StepTimeModel(llama8b, h100, tp=1)
    short = model.cost(BatchShape.of([(1, 100)] * 64, 64)).time_s
    long = model.cost(BatchShape.of([(1, 8000)] * 64, 64)).time_s
    bigger = model.cost(BatchShape.of([(1, 8000)] * 128, 128)).time_s
    assert short < long < bigger


def test_tensor_parallelism_shortens_steps_but_adds_all_reduce(llama8b, h100):
    one = StepTimeModel(llama8b, h100, tp=1).prefill_time(2048)
    two = StepTimeModel(llama8b, h100, tp=2).prefill_time(2048)
    assert one / 2 < two < one


def test_chunk_pairs_and_flops_bytes_are_reported(llama8b, h100):
    assert chunk_attention_pairs(4, 0) == 10          # causal 4x4 triangle
    assert chunk_attention_pairs(2, 3) == 2 * 3 + 3
    cost = StepTimeModel(llama8b, h100, tp=1).cost(BatchShape.of([(512, 0), (1, 2000)], 2))
    assert cost.flops > 2 * llama8b.active_params_per_token * 513 and cost.bytes > llama8b.weight_bytes * 0.9


def test_moe_reads_only_touched_experts():
    from conftest import load_yaml
    from sim.catalog import model_from_config

    mixtral = model_from_config(load_yaml("model", "mixtral-8x7b"))
    assert experts_touched(mixtral, 1) == pytest.approx(2.0)
    assert 7.9 < experts_touched(mixtral, 64) <= 8.0
